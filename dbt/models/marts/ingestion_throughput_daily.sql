-- Per tenant and UTC day a job started: jobs, records and what became of them, chunks, and
-- the finished jobs' throughput (planned items per second of wall time).

with

jobs as (

    select * from {{ ref('int_ingestion_jobs') }}

),

daily as (

    select
        tenant_id,
        started_on as occurred_on,
        count(*) as jobs,
        count(*) filter (where is_finished) as finished_jobs,
        sum(records_read) as records_read,
        sum(items) as items,
        sum(documents_ingested) as documents_ingested,
        sum(duplicates) as duplicates,
        sum(failed_items) as failed_items,
        sum(rejected_records) as rejected_records,
        sum(chunks) as chunks,
        sum(seconds) filter (where is_finished) as seconds,
        sum(items) filter (where is_finished) as finished_items
    from jobs
    group by
        tenant_id,
        started_on

),

rates as (

    select
        tenant_id,
        occurred_on,
        jobs,
        finished_jobs,
        records_read,
        items,
        documents_ingested,
        duplicates,
        failed_items,
        rejected_records,
        chunks,
        seconds,
        case when seconds > 0 then finished_items / seconds end as items_per_second
    from daily

)

select * from rates
