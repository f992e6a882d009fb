//! Tributary's analyze function (in progress): event-time windows, anomaly
//! models and alerts over `telemetry.raw`.
