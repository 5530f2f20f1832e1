//! Kafka trigger tests (being written).
