{#-
    The model's feature table: one row per application of every loaded drop, each feature from
    what was known at its applied_at (the applicant history is point-in-time correct, see
    int_applicant_history_features). The casts in `final` are the serving contract: every numeric
    feature DOUBLE and every categorical VARCHAR, the types of the model's logged input signature,
    so `mlflow.pyfunc` scores published rows as they are.

    - loan_to_income: loan_amount / annual income (income floored at 1,000: a declared zero income
      must not divide by zero);
    - installment_to_income: the monthly instalment of the loan at a notional 1 % a month
      (annuity formula), over the monthly income (same floor);
    - credit_band: the score's band, a slice the gates check separately.
-#}
with

applications as (

    select * from {{ ref('stg_raw__applications') }}

),

applicant_history as (

    select * from {{ ref('int_applicant_history_features') }}

),

application_attributes as (

    select
        application_id,
        applicant_id,
        applied_at,
        batch_date,
        annual_income,
        loan_amount,
        term_months,
        debt_to_income,
        credit_score,
        delinquencies_2y,
        employment_type,
        home_ownership,
        purpose,
        application_channel,
        ln(1 + annual_income) as log_income,
        loan_amount / greatest(annual_income, 1000) as loan_to_income,
        (loan_amount * 0.01 / (1 - power(1.01, -term_months))) / (greatest(annual_income, 1000) / 12)
            as installment_to_income,
        case
            when credit_score < 580 then 'poor'
            when credit_score < 670 then 'fair'
            when credit_score < 740 then 'good'
            else 'excellent'
        end as credit_band

    from applications

),

final as (

    select
        application_attributes.application_id,
        application_attributes.applicant_id,
        application_attributes.applied_at,
        application_attributes.batch_date,
        cast(application_attributes.annual_income as double precision) as annual_income,
        cast(application_attributes.log_income as double precision) as log_income,
        cast(application_attributes.loan_amount as double precision) as loan_amount,
        cast(application_attributes.loan_to_income as double precision) as loan_to_income,
        cast(application_attributes.installment_to_income as double precision) as installment_to_income,
        cast(application_attributes.term_months as double precision) as term_months,
        cast(application_attributes.debt_to_income as double precision) as debt_to_income,
        cast(application_attributes.credit_score as double precision) as credit_score,
        cast(application_attributes.delinquencies_2y as double precision) as delinquencies_2y,
        cast(application_attributes.credit_band as varchar) as credit_band,
        cast(application_attributes.employment_type as varchar) as employment_type,
        cast(application_attributes.home_ownership as varchar) as home_ownership,
        cast(application_attributes.purpose as varchar) as purpose,
        cast(application_attributes.application_channel as varchar) as application_channel,
        cast(applicant_history.applicant_prior_applications_30d as double precision)
            as applicant_prior_applications_30d

    from application_attributes
    inner join applicant_history
        on application_attributes.application_id = applicant_history.application_id

)

select * from final
