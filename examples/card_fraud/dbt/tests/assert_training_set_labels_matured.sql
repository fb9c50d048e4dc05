-- No row of the training set is younger than the label maturity: event_ts must be before
-- as_of - label_maturity_days, with as_of the end of the latest loaded batch (or var as_of).
-- A run from rebuild_from reads the partitions it rebuilt (from rebuild_from - label_maturity_days):
-- as_of only grows, so a row that passed once still passes.
{%- set as_of_override = var('as_of', none) %}
{%- set since = none if as_of_override else rebuild_from() %}
{%- set latest = latest_loaded_batch(since) if since else none %}
-- depends_on: {{ ref('stg_raw__transactions') }}
-- depends_on: {{ ref('stg_raw__chargebacks') }}
with

loaded_batches as (

    select batch_date from {{ ref('stg_raw__transactions') }}
    union all
    select batch_date from {{ ref('stg_raw__chargebacks') }}

),

as_of as (

    {%- if as_of_override %}
    select cast('{{ as_of_override }}' as {{ dbt.type_timestamp() }}) as as_of_ts
    {%- elif since %}
    select {{ day_start_literal(latest, 1) if latest else 'cast(null as ' ~ dbt.type_timestamp() ~ ')' }} as as_of_ts
    {%- else %}
    select cast({{ dbt.dateadd('day', 1, 'max(batch_date)') }} as {{ dbt.type_timestamp() }}) as as_of_ts
    from loaded_batches
    {%- endif %}

)

select
    training.transaction_id,
    training.event_ts,
    as_of.as_of_ts

from {{ ref('ml_training_set') }} as training
cross join as_of
where (
    training.event_ts >= {{ dbt.dateadd('day', -(var('label_maturity_days') | int), 'as_of.as_of_ts') }}
    or (training.is_fraud = 1 and training.label_reported_at > as_of.as_of_ts)
)
{%- if since %}
    and training.batch_date >= {{ day_literal(since, -(var('label_maturity_days') | int)) }}
{%- endif %}
