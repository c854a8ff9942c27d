-- One row per ingestion job with what became of its records: planned items by outcome,
-- rejected records, chunks written and the job's wall time once it finished.

with

jobs as (

    select * from {{ ref('stg_rag__ingestion_jobs') }}

),

items as (

    select
        job_id,
        count(*) as items,
        count(*) filter (where status = 'ingested') as documents_ingested,
        count(*) filter (where status = 'duplicate') as duplicates,
        count(*) filter (where status = 'failed') as failed_items,
        coalesce(sum(chunk_count) filter (where status = 'ingested'), 0) as chunks
    from {{ ref('stg_rag__ingestion_items') }}
    group by job_id

),

rejections as (

    select
        job_id,
        count(*) as rejected_records
    from {{ ref('stg_rag__ingestion_errors') }}
    group by job_id

),

summarised as (

    select
        jobs.job_id,
        jobs.tenant_id,
        jobs.status,
        jobs.started_on,
        jobs.started_at,
        jobs.finished_at,
        jobs.finished_at is not null as is_finished,
        coalesce(jobs.records_read, 0) as records_read,
        coalesce(items.items, 0) as items,
        coalesce(items.documents_ingested, 0) as documents_ingested,
        coalesce(items.duplicates, 0) as duplicates,
        coalesce(items.failed_items, 0) as failed_items,
        coalesce(rejections.rejected_records, 0) as rejected_records,
        coalesce(items.chunks, 0) as chunks,
        cast(
            extract(epoch from jobs.finished_at - jobs.started_at) as double precision
        ) as seconds
    from jobs
    left join items on jobs.job_id = items.job_id
    left join rejections on jobs.job_id = rejections.job_id

)

select * from summarised
