-- One row per reason a rejected record was refused for (a record failing several checks has
-- its reasons joined by "; "), classified: the reason texts carry values (lengths, ids, line
-- numbers), the classes are what an analyst counts. The patterns follow the messages of
-- rag_core.ingestion.sources and rag_core.ingestion.validation; anything else is 'other'.

with

errors as (

    select * from {{ ref('stg_rag__ingestion_errors') }}

),

reasons as (

    select
        errors.error_id,
        errors.job_id,
        errors.tenant_id,
        errors.rejected_at,
        trim(reason.text) as reason_text
    from errors
    cross join lateral regexp_split_to_table(errors.reason, ';\s+') as reason (text)

),

classified as (

    select
        error_id,
        job_id,
        tenant_id,
        rejected_at,
        case
            when reason_text like 'text length outside%' then 'text_length'
            when reason_text like 'text contains NUL%' then 'nul_characters'
            when reason_text like 'title longer than%' then 'title_too_long'
            when reason_text like 'duplicate id%' then 'duplicate_id'
            when reason_text like 'invalid tenant id%' then 'invalid_tenant_id'
            when reason_text like 'invalid UTF-8%' then 'invalid_utf8'
            when
                reason_text like 'malformed JSON%'
                or reason_text like 'JSON nested deeper%'
                or reason_text like 'expected a JSON object%'
                or reason_text like 'missing or invalid ''\_id''%'
                or reason_text like '''title'' is not a string%'
                or reason_text like 'missing or non-string ''text''%'
                then 'malformed_record'
            when
                reason_text like 'file of % bytes, over the limit%'
                or reason_text like 'reading stopped at line %: over %'
                then 'over_size_limit'
            when reason_text like 'reading stopped at line %' then 'unreadable_file'
            when
                reason_text like '%: contains a NUL character%'
                or reason_text like '%: contains a lone surrogate%'
                or reason_text like '%: nested deeper than%'
                then 'unstorable_value'
            else 'other'
        end as reason
    from reasons

)

select * from classified
