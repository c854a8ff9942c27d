{#- The audit_id an incremental model reads past: the highest one it holds less the lookback
    window (var audit_id_lookback, see dbt_project.yml), or 0 on a first or full build (ids
    start at 1). A macro rather than an if-block in each model: the models' SQL then reads the
    same (and lints the same) whether or not the run is incremental. -#}
{% macro audit_watermark() -%}
    {%- if is_incremental() -%}
        (
            select coalesce(max(loaded.audit_id), 0) - {{ var('audit_id_lookback') }}
            from {{ this }} as loaded
        )
    {%- else -%}
        0
    {%- endif -%}
{%- endmacro %}
