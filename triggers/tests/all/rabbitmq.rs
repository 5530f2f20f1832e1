//! RabbitMQ trigger tests (being written).
