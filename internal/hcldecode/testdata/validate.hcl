kafka {
  brokers = ["kafka-1:9092"]
}

buffer {
  chunk_size   = "64MiB"
  memory_limit = "32MiB"
}

output "primary" {
  url = "ftp://es-1"
}
