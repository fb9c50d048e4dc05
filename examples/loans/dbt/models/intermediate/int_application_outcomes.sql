{#-
    The outcome of every application that has one, with the moment it became known. Both classes
    are delivered, so an application without a row here has no known outcome yet (never "repaid").
    `defaulted` is the positive class (contract.labels.positive_values in config/models/loans.yaml).
    Several outcome records for one application collapse to the first report: the loan's outcome
    was known from then on.
-#}
with

outcomes as (

    select * from {{ ref('stg_raw__outcomes') }}

),

ranked as (

    select
        application_id,
        outcome,
        reported_at,
        row_number() over (
            partition by application_id
            order by reported_at, outcome_id
        ) as report_rank

    from outcomes

),

final as (

    select
        application_id,
        outcome,
        reported_at as outcome_reported_at,
        case when outcome = 'defaulted' then 1 else 0 end as is_default

    from ranked
    where report_rank = 1

)

select * from final
