{#-
    Features + the delivered outcome for every application whose outcome has matured.

    as_of is the end (exclusive) of the latest loaded batch_date of either feed, or var('as_of').
    An application is in the set only if applied_at < as_of - label_maturity_days (by then its
    outcome has, by contract, been delivered) AND its outcome was reported by as_of. Both classes
    are delivered, so the target is the outcome itself (is_default = 1 for `defaulted`, 0 for
    `repaid`); a matured application without a delivered outcome is left out, never counted as
    repaid (the warn test assert_matured_applications_have_outcomes reports them).
-#}
{%- set maturity_days = var('label_maturity_days') | int -%}
{%- set as_of_override = var('as_of', none) -%}
with

features as (

    select * from {{ ref('ml_application_features') }}

),

outcomes as (

    select * from {{ ref('int_application_outcomes') }}

),

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

),

maturity as (

    select
        as_of_ts,
        cast({{ dbt.dateadd('day', -maturity_days, 'as_of_ts') }} as {{ dbt.type_timestamp() }}) as matured_before_ts

    from as_of

),

labelled as (

    select
        features.*,
        outcomes.outcome,
        outcomes.outcome_reported_at,
        outcomes.is_default

    from features
    cross join maturity
    inner join outcomes
        on features.application_id = outcomes.application_id
    where features.applied_at < maturity.matured_before_ts
        and outcomes.outcome_reported_at <= maturity.as_of_ts

),

final as (

    select
        application_id,
        applicant_id,
        applied_at,
        batch_date,
        annual_income,
        log_income,
        loan_amount,
        loan_to_income,
        installment_to_income,
        term_months,
        debt_to_income,
        credit_score,
        delinquencies_2y,
        credit_band,
        employment_type,
        home_ownership,
        purpose,
        application_channel,
        applicant_prior_applications_30d,
        cast(is_default as integer) as is_default,
        outcome,
        outcome_reported_at

    from labelled

)

select * from final
