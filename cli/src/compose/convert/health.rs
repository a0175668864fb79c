//! `healthcheck` as the engine's health config (Docker's
//! `convertHealthcheck`).

use shoal_api::pb::HealthConfig;

use crate::compose::model;

pub(super) fn config(check: &model::Healthcheck) -> Result<HealthConfig, (&'static str, String)> {
    if check.disable {
        if !check.test.is_empty() {
            return Err((
                "disable",
                "test and disable can't be set at the same time".into(),
            ));
        }
        return Ok(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    if let Some(first) = check.test.first()
        && !matches!(first.as_str(), "CMD" | "CMD-SHELL" | "NONE")
    {
        return Err((
            "test",
            format!("a list test starts with CMD, CMD-SHELL or NONE, not {first:?}"),
        ));
    }
    let ms = |d: Option<model::units::GoDuration>| d.map_or(0, |d| d.millis());
    Ok(HealthConfig {
        test: check.test.clone(),
        interval_ms: ms(check.interval),
        timeout_ms: ms(check.timeout),
        retries: check.retries.unwrap_or(0),
        start_period_ms: ms(check.start_period),
        start_interval_ms: ms(check.start_interval),
    })
}
