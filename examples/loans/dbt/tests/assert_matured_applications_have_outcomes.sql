-- Matured applications (applied_at before as_of - label_maturity_days) without a delivered
-- outcome: both classes are delivered, so each one is a gap in the outcomes export.
with

loaded_batches as (

    select batch_date from {{ ref('stg_raw__applications') }}
    union all
    select batch_date from {{ ref('stg_raw__outcomes') }}

),

as_of as (

    select cast({{ dbt.dateadd('day', 1, 'max(batch_date)') }} as {{ dbt.type_timestamp() }}) as as_of_ts
    from loaded_batches

)

select
    applications.application_id,
    applications.applied_at

from {{ ref('stg_raw__applications') }} as applications
cross join as_of
left join {{ ref('int_application_outcomes') }} as outcomes
    on applications.application_id = outcomes.application_id
where applications.applied_at < {{ dbt.dateadd('day', -(var('label_maturity_days') | int), 'as_of.as_of_ts') }}
    and outcomes.application_id is null
