#!/usr/bin/env bash
# Makes sure the brokers the trigger tests talk to are up. RabbitMQ is a machine service
# (127.0.0.1:5672, guest/guest); started here if it is installed but not running. Kafka needs no
# service: the tests run librdkafka's mock cluster (real protocol over TCP) in-process.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5672; then
    if command -v rabbitmq-server >/dev/null; then
        echo "services: starting RabbitMQ"
        rabbitmq-server -detached || true
        for _ in $(seq 1 60); do port_open 5672 && break; sleep 1; done
    fi
    port_open 5672 || { echo "services: RabbitMQ is not reachable on 127.0.0.1:5672 (the trigger tests need it)" >&2; exit 1; }
fi
