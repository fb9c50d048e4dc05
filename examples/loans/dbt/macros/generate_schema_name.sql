{#-
    Use custom schema names verbatim (staging / intermediate / ml) instead of dbt's default
    `<target_schema>_<custom>`: the rest of closedloop (GX gate, publish, inference) reads
    the marts by the exact names the config declares on every target.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
