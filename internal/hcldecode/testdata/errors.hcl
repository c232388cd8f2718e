node_name = ["shipper-01"]
sample_ratoi = 0.5

kafka {
  brokers    = ["kafka-1:9092"]
  password   = env("SHIPPER_TEST_UNSET")
  partitions = "many"
}

buffer {
  chunk_size     = "5x"
  flush_interval = "5 seconds"
  sync           = "yes"
}

buffer {
  dir = "/tmp/other"
}

bufer {
}
