# A complete agent configuration. Attributes left out keep their defaults.
node_name    = "shipper-01"
sample_ratio = 0.25

kafka {
  brokers   = ["kafka-1:9092", "kafka-2:9092"]
  topics    = ["logs.app", "logs.nginx"]
  password  = env("SHIPPER_TEST_KAFKA_PASSWORD")
  max_bytes = 1048576
  labels = {
    env  = "prod"
    team = "infra"
  }
}

buffer {
  dir            = env("SHIPPER_TEST_BUFFER_DIR", "/var/lib/shipper")
  chunk_size     = "8MiB"
  memory_limit   = 268435456
  flush_interval = "1m30s"
}

output "primary" {
  url     = "https://es-1:9200"
  workers = 4
}

output "fallback" {
  url = "https://es-2:9200"
}
