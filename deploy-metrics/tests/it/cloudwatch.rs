//! CloudWatch alarms on moto.
