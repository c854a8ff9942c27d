with

source as (

    select * from {{ source('rag', 'benchmark_runs') }}

),

renamed as (

    select
        run_id,
        benchmark,
        dataset,
        split,
        mode,
        config,
        metrics,
        git_commit,
        started_at,
        finished_at
    from source

)

select * from renamed
