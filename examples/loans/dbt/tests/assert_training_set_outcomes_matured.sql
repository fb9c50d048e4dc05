-- No row of the training set is younger than the label maturity (applied_at before
-- as_of - label_maturity_days, as_of the end of the latest loaded batch or var as_of), and no
-- outcome in it was reported after as_of.
{%- set as_of_override = var('as_of', none) %}
with

loaded_batches as (

    select batch_date from {{ ref('stg_raw__applications') }}
    union all
    select batch_date from {{ ref('stg_raw__outcomes') }}

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
    training.application_id,
    training.applied_at,
    training.outcome_reported_at,
    as_of.as_of_ts

from {{ ref('ml_loan_training_set') }} as training
cross join as_of
where training.applied_at >= {{ dbt.dateadd('day', -(var('label_maturity_days') | int), 'as_of.as_of_ts') }}
    or training.outcome_reported_at > as_of.as_of_ts
