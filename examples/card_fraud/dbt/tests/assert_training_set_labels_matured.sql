-- No row of the training set is younger than the label maturity: event_ts must be before
-- as_of - label_maturity_days, with as_of the end of the latest loaded batch (or var as_of).
{%- set as_of_override = var('as_of', none) %}
with

loaded_batches as (

    select batch_date from {{ ref('stg_raw__transactions') }}
    union all
    select batch_date from {{ ref('stg_raw__chargebacks') }}

),

as_of as (

    {%- if as_of_override %}
    select cast('{{ as_of_override }}' as {{ dbt.type_timestamp() }}) as as_of_ts
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
where training.event_ts >= {{ dbt.dateadd('day', -(var('label_maturity_days') | int), 'as_of.as_of_ts') }}
    or (training.is_fraud = 1 and training.label_reported_at > as_of.as_of_ts)
