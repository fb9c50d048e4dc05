{#-
    Day-partitioned incremental models (docs/architecture.md, "Incremental marts").

    The first day an incremental run rebuilds (an ISO date: that day's partition and every later one,
    so a late or backfilled day also rebuilds the days downstream of it) comes from var('rebuild_from')
    or, as the pipeline passes its day, the environment variable CLOSEDLOOP_DBT_REBUILD_FROM. The
    variable is read only while executing (`execute`), never while parsing: a var that changes every
    day would make dbt re-parse the whole project on every run (about 2 CPU s), an environment value
    read at run time keeps partial parsing. Without either an incremental run rebuilds every
    partition, which equals `--full-refresh` (safe whenever the raw history changed in unknown ways).
    Partitions are event days: the front door admits only rows whose event (report) time falls in
    their batch's interval, so a batch_date partition and an event-day partition are the same rows.
-#}

{#- The first day to rebuild (a date), or none: rebuild everything. -#}
{% macro rebuild_from() -%}
    {%- set day = var('rebuild_from', none) -%}
    {%- if day is none and execute -%}
        {%- set day = env_var('CLOSEDLOOP_DBT_REBUILD_FROM', '') -%}
    {%- endif -%}
    {%- if day is none or (day | string | trim) in ('', 'None', 'null') -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set text = day | string | trim -%}
    {%- set parsed = modules.re.match('^[0-9]{4}-[0-9]{2}-[0-9]{2}$', text) -%}
    {%- if not parsed -%}
        {{ exceptions.raise_compiler_error(
            "invalid rebuild_from " ~ (text | tojson) ~ " (var rebuild_from or CLOSEDLOOP_DBT_REBUILD_FROM): give "
            ~ "the first day to rebuild as YYYY-MM-DD (e.g. --vars '{rebuild_from: \"2026-01-05\"}'), or leave "
            ~ "it unset to rebuild every partition"
        ) }}
    {%- endif -%}
    {{ return(modules.datetime.date.fromisoformat(text)) }}
{%- endmacro %}


{#- The first day this run rebuilds when it is an incremental run of a partition, else none
    (a first build, --full-refresh, or an incremental run without rebuild_from: all rows). -#}
{% macro incremental_since() -%}
    {%- if is_incremental() -%}
        {{ return(rebuild_from()) }}
    {%- endif -%}
    {{ return(none) }}
{%- endmacro %}


{#- `day` shifted by `days`, as a SQL date literal. -#}
{% macro day_literal(day, days=0) -%}
    cast('{{ (day + modules.datetime.timedelta(days=days)).isoformat() }}' as date)
{%- endmacro %}


{#- `day` shifted by `days`, as a SQL timestamp literal (midnight). -#}
{% macro day_start_literal(day, days=0) -%}
    cast('{{ (day + modules.datetime.timedelta(days=days)).isoformat() }} 00:00:00' as {{ dbt.type_timestamp() }})
{%- endmacro %}


{#- Pre-hook of every incremental model: remove the partitions this run rebuilds (all of them
    without rebuild_from), inside the model's transaction, so a failed run leaves the old rows and a
    partition whose rows disappeared upstream does not linger. -#}
{% macro delete_rebuilt_partitions(partition_column) -%}
    {%- if is_incremental() -%}
        {%- set since = rebuild_from() -%}
        delete from {{ this }}{% if since %} where {{ partition_column }} >= {{ day_literal(since) }}{% endif %}
    {%- endif -%}
{%- endmacro %}


{#- The last event day at or after `since` in `relation` (its `ts_column`), as a date; `since`
    when there is none. Lets a model bound its reads by literals (so they push down to the scan). -#}
{% macro last_event_day(relation, ts_column, since) -%}
    {%- if not execute -%}
        {{ return(since) }}
    {%- endif -%}
    {%- set result = run_query(
        "select cast(max(" ~ ts_column ~ ") as date) from " ~ relation ~ " where " ~ ts_column ~ " >= "
        ~ day_start_literal(since)
    ) -%}
    {%- set last = result.columns[0].values()[0] -%}
    {%- if last is none -%}
        {{ return(since) }}
    {%- endif -%}
    {{ return(modules.datetime.date.fromisoformat((last | string)[:10])) }}
{%- endmacro %}


{#- An amount as an exact decimal: sums of it are the same whatever the order or grouping (daily
    state + edge rows + same-day rows vs one window), so an incremental rebuild and a full build give
    bit-identical averages and a re-run day re-publishes the same bytes. -#}
{% macro exact_amount(column) -%}
    cast({{ column }} as decimal(18, 6))
{%- endmacro %}


{#- Data tests of a day-partitioned model read only the partitions this run rebuilt (dbt's `where`
    test config, applied here for every generic test of a model whose meta names its
    `partition_column`): the older partitions were tested when they were built and no run changes
    them, so a day's tests cost the day, not the history. Without rebuild_from (a full build) every
    partition is tested. Checks across partitions live where they stay bounded: reused ids at the
    front door (an anti-join against the id index), per-entity state (first-seen pairs) unscoped. -#}
{% macro get_where_subquery(relation) -%}
    {%- set filters = [] -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- do filters.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- set partition = tested_partition() -%}
    {%- set since = rebuild_from() -%}
    {%- if partition.column and since -%}
        {%- set lag = (var(partition.lag_var) | int) if partition.lag_var else 0 -%}
        {%- do filters.append(partition.column ~ ' >= ' ~ day_literal(since, -lag)) -%}
    {%- endif -%}
    {%- if filters -%}
        {{ return('(select * from ' ~ relation ~ ' where ' ~ (filters | join(' and ')) ~ ') dbt_subquery') }}
    {%- endif -%}
    {{ return(relation) }}
{%- endmacro %}


{#- The partition of the model the running test is attached to, from its meta: `partition_column`
    and `partition_lag_var` (a var naming how many days before rebuild_from its rebuilt partitions
    start, e.g. the training set's label maturity); column none when it has none. -#}
{% macro tested_partition() -%}
    {%- set none_ = {'column': none, 'lag_var': none} -%}
    {%- if not execute or model is not mapping -%}
        {{ return(none_) }}
    {%- endif -%}
    {%- set node = graph.nodes.get(model.get('attached_node') or '') -%}
    {%- if not node -%}
        {{ return(none_) }}
    {%- endif -%}
    {%- set meta = node.get('config', {}).get('meta') or {} -%}
    {{ return({'column': meta.get('partition_column'), 'lag_var': meta.get('partition_lag_var')}) }}
{%- endmacro %}
