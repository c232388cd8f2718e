# shipper configuration.
#
# Every setting is shown with its default. Durations are strings such as
# "500ms", "30s" or "5m"; sizes are strings such as "512KiB", "64MiB" or
# "10GiB" (KB/MB/GB are decimal, KiB/MiB/GiB binary), or a number of bytes.
# env("NAME", "default") reads an environment variable, so secrets and
# per-host values stay out of this file; env("NAME") without a default
# fails validation when NAME is unset.
#
# Check a file with: shipper validate -config FILE

# Directory for the agent's state (the buffer lives in <data_dir>/buffer).
data_dir = env("SHIPPER_DATA_DIR", "/var/lib/shipper")

# Graceful shutdown deadline: stop consuming, deliver what is buffered,
# commit, close. What is not delivered in time stays on disk.
shutdown_timeout = "30s"

log {
  # debug, info, warn or error.
  level = env("SHIPPER_LOG_LEVEL", "info")
  # json or text.
  format = "json"
}

api {
  # HTTP API: GET /api/health[/live|/ready], GET /api/status,
  # POST /api/flush[?wait=30s], GET /api/flush/{id}, GET /api/metrics (and
  # /metrics), GET /api/dlq, POST /api/dlq/replay, POST /api/dlq/purge.
  # Loopback by default: the API can trigger flushes, replays and purges.
  address = env("SHIPPER_API_ADDRESS", "127.0.0.1:8686")
  # Bearer token that flush and the dead-letter endpoints require
  # ("Authorization: Bearer <token>"); required when address is not loopback.
  # Health, status and metrics stay open. The CLI sends the token of its
  # -config file, else $SHIPPER_API_TOKEN.
  token = env("SHIPPER_API_TOKEN", "")
  # Serve Go's profiles at /debug/pprof/ (behind the token when set).
  pprof = false
}

kafka {
  # Bootstrap brokers, host:port; one entry may list several, comma-separated.
  brokers = [env("KAFKA_BROKERS", "127.0.0.1:9092")]
  # Topics to consume (required).
  topics = [env("SHIPPER_TOPIC", "app-logs")]
  # Consumer group: agents with the same group share the partitions.
  group_id = env("SHIPPER_GROUP", "shipper")
  # Where to start in partitions the group never committed: earliest or latest.
  start_offset = "earliest"
  # How often delivered offsets are committed. An offset is committed only
  # when Elasticsearch holds every record below it.
  commit_interval = "1s"
  # Group membership timing.
  session_timeout    = "30s"
  heartbeat_interval = "3s"
  rebalance_timeout  = "30s"
  # read_committed: records of aborted transactions are never read, and
  # records of open transactions wait for their commit. read_uncommitted
  # reads both. Transaction markers (control records) are never read.
  isolation_level = "read_committed"
  # Fetched data held at once, across all assigned partitions whatever their
  # number: twice this is part of the agent's memory overhead (above
  # buffer.memory_limit; docs/architecture.md).
  # A single record batch larger than this is still fetched, alone.
  fetch_max_bytes = "8MiB"
  # How long a broker may hold a fetch open waiting for new records.
  fetch_max_wait  = "500ms"
  dial_timeout    = "10s"
  # How often the topics' partition counts and ids are checked: a topic
  # created after the agent started, grown, or deleted and created again
  # makes the group rebalance to read it.
  topic_refresh_interval = "10s"

  # TLS to the brokers (default: plain TCP). The block needs enabled = true;
  # other settings without it are an error. Files are PEM, read at start.
  # tls {
  #   enabled = true
  #   # CAs that verify the brokers' certificates (default: the system's).
  #   ca_file = "/etc/shipper/kafka-ca.pem"
  #   # A client certificate and its key, for brokers that ask; both or neither.
  #   cert_file = "/etc/shipper/kafka-client.pem"
  #   key_file  = "/etc/shipper/kafka-client-key.pem"
  #   # Name verified in the brokers' certificates (default: each broker's host).
  #   server_name = "kafka.internal"
  #   # Accept any certificate: encrypted but not authenticated. Tests only;
  #   # the agent warns at start.
  #   insecure_skip_verify = false
  # }

  # SASL authentication (default: none). Mechanism PLAIN, SCRAM-SHA-256 or
  # SCRAM-SHA-512; PLAIN sends the password as it is, so use it with tls.
  # Keep the password out of this file. A refused login makes
  # /api/health answer 503 "input_failing"; the agent keeps retrying.
  # sasl {
  #   mechanism = "SCRAM-SHA-512"
  #   username  = "shipper"
  #   password  = env("KAFKA_PASSWORD")
  # }
}

buffer {
  # Default: <data_dir>/buffer.
  # dir = "/var/lib/shipper/buffer"

  # The open chunk is sealed and written at this size...
  chunk_size = "4MiB"
  # ...or at this age.
  flush_interval = "1s"
  # Ceiling on chunk bytes in memory (open, being written, loaded for
  # delivery). Appends block at the ceiling: the Kafka input pauses.
  memory_limit = "64MiB"
  # Ceiling on the buffer's disk use: stored chunks, and the directory
  # itself (deleted chunks are reclaimed by value-log GC). Appends block at
  # the ceiling.
  disk_limit = "10GiB"
  # Free space left on the filesystem whatever else fills it; below it
  # appends block as at disk_limit. At least 112MiB.
  min_free_space = "256MiB"
  # Compression of stored chunks: none or zstd.
  compression = "none"
  # fsync every chunk write (off: survives a process crash, not a power loss;
  # offsets are committed only after delivery, so Kafka still has the data).
  sync_writes = true
}

elasticsearch {
  # Nodes or a load balancer; one entry may list several, comma-separated.
  urls = [env("ES_URL", "http://127.0.0.1:9200")]
  # Target index: a name, or a pattern over the record such as
  # "logs-{topic}-{+yyyy.MM.dd}": {topic}; a document field {[field]} or
  # {[a][b]}; the event's date {+yyyy.MM.dd} (tokens yyyy yy MM dd HH; UTC;
  # the document's @timestamp, else the Kafka timestamp). Not Logstash's
  # %{...}: in HCL "%{" starts a template. Names are lower-cased and
  # characters Elasticsearch refuses become "_"; a record with no valid name
  # (a missing field) is dead-lettered as index_routing.
  # Document ids are deterministic (document_id below), so replays never
  # duplicate, whatever index a record is routed to.
  index = env("SHIPPER_INDEX", "shipper-logs")
  # The index names data streams: create only, @timestamp always set.
  data_stream = false
  # An ingest pipeline every bulk request goes through ("" = none).
  pipeline = ""
  # Start-up check (go-retryablehttp, jittered backoff): wait for a node to
  # answer, check it is Elasticsearch 8.x (GET /_nodes/_local), install the
  # index template. Consuming goes on meanwhile. Past startup_timeout the
  # agent logs an error and delivers anyway; another version or a refused
  # template stop it (refused credentials hold delivery, as at any time).
  startup_timeout = "2m"
  # A JSON index template (the body of PUT _index_template/<name>) to
  # install at start ("" = none), and its name.
  template_file = ""
  template_name = "shipper"
  # Credentials, sent on every request (bulk, probes, start-up check): one
  # way at most, basic (username with password), api_key or bearer_token.
  # Keep secrets out of this file: from the environment, or from files
  # (e.g. a Kubernetes secret mounted as a file), read at start and read
  # again when the file changes (checked at most once a second), so a
  # rotated secret applies without a restart; a final newline is dropped.
  # Setting both x and x_file is an error. Refused credentials (401, 403)
  # hold delivery until they are accepted; nothing is lost meanwhile.
  username = env("ES_USERNAME", "")
  password = env("ES_PASSWORD", "")
  # password_file = "/etc/shipper/es/password"
  # An API key: its encoded form (base64 of id:api_key), or id:api_key.
  api_key = env("ES_API_KEY", "")
  # api_key_file = "/etc/shipper/es/api-key"
  # A token sent as "Authorization: Bearer ...": an access token, a service
  # account token or a JWT.
  # bearer_token      = env("ES_BEARER_TOKEN")
  # bearer_token_file = "/var/run/secrets/es/token"

  # HTTPS, which https:// urls turn on, verifies the nodes' certificates
  # against the system's roots by default. This block configures it; it
  # needs at least one https:// url. Files are PEM.
  # tls {
  #   # CAs that verify the nodes' certificates (default: the system's);
  #   # read at start.
  #   ca_file = "/etc/shipper/es/ca.pem"
  #   # A client certificate and its key, for nodes that ask; both or
  #   # neither. Read again when they change.
  #   cert_file = "/etc/shipper/es/tls.crt"
  #   key_file  = "/etc/shipper/es/tls.key"
  #   # Name verified in the nodes' certificates (default: each url's host).
  #   server_name = "es.internal"
  #   # Accept any certificate: encrypted but not authenticated, so the
  #   # credentials can be read in between. Tests only; the agent warns at
  #   # start.
  #   insecure_skip_verify = false
  # }
  # A certificate that does not verify is logged as an error naming the
  # setting to check, and /api/health answers 503 "output_failing" while no
  # node can be reached for it; the buffer keeps everything meanwhile.
  # Most bulk requests in flight at once, retries included; also the number
  # of chunks delivered concurrently (each worker holds one chunk, part of
  # the memory overhead above buffer.memory_limit).
  max_in_flight = 4
  # Adapt the requests in flight within [1, max_in_flight]: halved on a 429,
  # a whole-request 5xx or no answer, cut by a quarter when answers slow to
  # three times the cluster's base latency, grown while answers are good.
  # false: always max_in_flight.
  adaptive_concurrency = true
  # Bulk request bodies: none or gzip (fastest level).
  compression = "none"
  # A chunk whose bulk body exceeds this is sent as several requests. At
  # most 100MiB (Elasticsearch's default http.max_content_length); a smaller
  # limit of the node or a proxy is learned from its 413 answers.
  max_bulk_bytes = "8MiB"
  # A document Elasticsearch fails for its own sake (a per-item 500) this
  # many times is dead-lettered with every reason seen. 429, 502, 503, 504
  # and whole-request failures never count: they are the cluster's state.
  max_item_attempts = 10
  # Document ids. offset: one document per record,
  # <topic>-<topic id>-<partition>-<offset>, written with create (replays
  # find it). key: one document per record key, <topic>-<topic id>-<key>,
  # written with index and the offset as external version, so it holds the
  # key's latest record whatever the delivery order (a compacted topic
  # mirrored); records without a key keep offset ids.
  document_id = "offset"
  # A record with a null value (a Kafka tombstone): skip, dead_letter, or
  # delete (with document_id = "key": deletes the key's document).
  # A record with an empty value is always skipped: nothing to index.
  tombstones = "skip"
  # A value that is not valid UTF-8: base64 (indexed as "message" with
  # U+FFFD replacements plus "message_base64" with the exact bytes) or
  # dead_letter.
  invalid_utf8 = "base64"
  # Add each record's Kafka topic, partition, offset, key and timestamp to
  # its document under this field ("" = off), with the headers named here.
  metadata_field   = ""
  metadata_headers = []
  # Bounds on one request and on connections.
  request_timeout       = "60s"
  dial_timeout          = "5s"
  tls_handshake_timeout = "10s"
  # Retire idle pooled connections before a firewall or proxy would.
  idle_conn_timeout = "30s"
  # TCP keepalive idle time (probes every keepalive/3, 3 probes).
  keepalive = "15s"
  # Retire any connection this old once idle (load balancers rebalance).
  conn_max_lifetime = "5m"

  # The connection pool. A node is marked dead on what happens on the wire
  # (refused, a reset on a fresh connection, a TLS failure, a stall, a
  # proxy's 502/503/504, silence while another node answers), never on the
  # caller's deadline; a dead node is probed with a plain TCP connect every
  # probe_interval (jittered) and comes back on its first answered GET /.
  probe_interval = "1s"
  # Backoff ceiling of the GET / probes of a node that accepts connections
  # but does not answer.
  resurrect_max = "30s"
  # A request body that drains no bytes, or an answer that delivers none,
  # for this long is a stall: its connection is closed and the request goes
  # to another node. TCP_USER_TIMEOUT is twice this.
  stall_timeout = "10s"
  # A written request unanswered this long (longer for large bulks, or for a
  # node that has been slow) is sent again, first on a fresh connection,
  # then to another node; the first answer wins. 0 turns hedging off.
  hedge_after = "2s"
  # Hedges are at most this share of the last minute's requests, and pause
  # after a 429.
  hedge_budget = 0.1
  # Chunks wait, a node looks alive, and no bulk request returned for this
  # long: the delivery workers are restarted; still stuck as long again,
  # /api/health reports the pipeline wedged.
  pipeline_stall_timeout = "5m"
  # Jittered exponential backoff between delivery attempts. Delivery gives
  # up on a document only as max_item_attempts says; data stays buffered
  # until Elasticsearch takes it. Documents held because the cluster or the
  # credentials are wrong (401, 403, a write block, a missing index) are
  # retried every retry_max_backoff, or at once on POST /api/flush.
  retry_initial_backoff = "500ms"
  retry_max_backoff     = "30s"
}

dead_letter {
  # Records Elasticsearch can never accept as they are (a mapping conflict,
  # a document too large) are kept here with every reason, in the buffer's
  # directory. List, replay and purge them with `shipper dlq`.
  #
  # Size bound; 0 means a tenth of buffer.disk_limit. At most half of it.
  max_bytes = "0"
  # When full: drop_oldest (counted in shipper_deadletter_dropped_total and
  # logged) or block (deliveries wait, then the Kafka input pauses, until
  # the store is replayed or purged).
  when_full = "drop_oldest"
}
