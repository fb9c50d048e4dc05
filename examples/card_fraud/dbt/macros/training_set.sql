{#-
    The incremental training set (models/marts/ml/ml_training_set.sql): which partitions a run
    rebuilds and the as_of it cuts at, both as literals read before the build, so the build reads
    the rebuilt partitions plus the labels, not the whole feature history.
-#}

{#- The first day (a date) of the latest loaded batch of either feed, read from the rows at or after
    `since` only: the front door admits a row only inside its batch's day, so the latest batch's
    rows are among them. The whole feeds when nothing was loaded from `since` on. -#}
{% macro latest_loaded_batch(since) -%}
    {%- if not execute -%}
        {{ return(since) }}
    {%- endif -%}
    {%- set latest -%}
        select max(batch_date) from (
            select max(batch_date) as batch_date from {{ ref('stg_raw__transactions') }}
            {%- if since %} where event_ts >= {{ day_start_literal(since) }}{% endif %}
            union all
            select max(batch_date) as batch_date from {{ ref('stg_raw__chargebacks') }}
            {%- if since %} where reported_at >= {{ day_start_literal(since) }}{% endif %}
        ) as latest
    {%- endset -%}
    {%- set day = run_query(latest).columns[0].values()[0] -%}
    {%- if day is none and since -%}
        {{ return(latest_loaded_batch(none)) }}
    {%- endif -%}
    {{ return(none if day is none else modules.datetime.date.fromisoformat((day | string)[:10])) }}
{%- endmacro %}


{#- The first training-set partition (batch_date) an incremental run from `since` rebuilds, or none
    for all of them (no rebuild_from, a first build, or an as_of override). A run from day D adds
    the rows that matured with D (batch D - maturity on), and rebuilds an older partition only when
    a label of one of its rows changed: a chargeback reported from D on (a label later than the
    maturity contract allows) or one withdrawn by a re-delivered day. -#}
{% macro training_set_first_partition(maturity_days) -%}
    {%- set since = incremental_since() -%}
    {%- if not since or var('as_of', none) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set first = since - modules.datetime.timedelta(days=maturity_days) -%}
    {%- if not execute -%}
        {{ return(first) }}
    {%- endif -%}
    {%- set touched -%}
        select min(batch_date) from (
            select batch_date from {{ this }}
            where label_reported_at >= {{ day_start_literal(since) }} and batch_date < {{ day_literal(first) }}
            union all
            select features.batch_date
            from {{ ref('ml_transaction_features') }} as features
            inner join {{ ref('stg_raw__chargebacks') }} as chargebacks
                on chargebacks.transaction_id = features.transaction_id
            where chargebacks.reported_at >= {{ day_start_literal(since) }}
                and features.batch_date < {{ day_literal(first) }}
        ) as touched
    {%- endset -%}
    {%- set found = run_query(touched).columns[0].values()[0] -%}
    {%- if found is none -%}
        {{ return(first) }}
    {%- endif -%}
    {{ return(modules.datetime.date.fromisoformat((found | string)[:10])) }}
{%- endmacro %}


{#- Pre-hook of the training set: remove the partitions this run rebuilds (every one on a full
    rebuild), inside the model's transaction. -#}
{% macro delete_rebuilt_training_set(maturity_days) -%}
    {%- if is_incremental() -%}
        {%- set first = training_set_first_partition(maturity_days) -%}
        delete from {{ this }}{% if first %} where batch_date >= {{ day_literal(first) }}{% endif %}
    {%- endif -%}
{%- endmacro %}


{#- Pre-hook of int_transaction_labels: remove the labels a run from rebuild_from recomputes (the
    transactions with a chargeback reported from that day on) and those first reported from that day
    on (recomputed if a chargeback still supports them); every label without rebuild_from. -#}
{% macro delete_rebuilt_labels() -%}
    {%- if is_incremental() -%}
        {%- set since = rebuild_from() -%}
        delete from {{ this }}
        {%- if since %}
        where label_reported_at >= {{ day_start_literal(since) }}
            or transaction_id in (
                select transaction_id from {{ ref('stg_raw__chargebacks') }}
                where reported_at >= {{ day_start_literal(since) }}
            )
        {%- endif %}
    {%- endif -%}
{%- endmacro %}
