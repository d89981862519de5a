# ---------------------------------------------------------------- identity

variable "name" {
  type        = string
  description = "Deployment name, e.g. \"circa-prod\". Prefixes every resource name in this region."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "AWS region this module instance runs in; must be the region of the aws provider passed in."

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like an AWS region name, e.g. eu-west-1."
  }
}

variable "cluster_regions" {
  type        = list(string)
  description = "Every region of the circa cluster (this one included). Nodes discover peers to --join in these regions."

  validation {
    condition     = length(var.cluster_regions) >= 1 && length(var.cluster_regions) == length(distinct(var.cluster_regions))
    error_message = "cluster_regions must be a non-empty list without duplicates."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Deletion protection of the load balancer. Turn off only to remove the region (README: removing a region)."
  default     = true
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}

# ---------------------------------------------------------------- network

variable "vpc_cidr" {
  type        = string
  description = "CIDR of this region's VPC. Must not overlap any other region's (the VPCs are peered for Raft traffic)."

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be a valid IPv4 CIDR of /20 or larger."
  }
}

variable "az_count" {
  type        = number
  description = "Availability zones to spread subnets, nodes and the load balancer over."
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "peer_cidrs" {
  type        = list(string)
  description = "VPC CIDRs of the other regions: allowed to reach the Raft peer port."
  default     = []

  validation {
    condition     = alltrue([for c in var.peer_cidrs : can(cidrhost(c, 0))])
    error_message = "peer_cidrs must be valid IPv4 CIDRs."
  }
}

# ---------------------------------------------------------------- nodes

variable "instance_type" {
  type        = string
  description = "EC2 instance type of every circa node. Sizing in terraform/README.md assumes 2 vCPU (c7i.large)."
  default     = "c7i.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like an EC2 instance type, e.g. c7i.large."
  }
}

variable "ami_id" {
  type        = string
  description = "AMI to boot (Debian 12, amd64). null takes the latest Debian 12 image from the public SSM parameter; pin it in prod so a new Debian image does not start an instance refresh."
  default     = null

  validation {
    condition     = var.ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be null or an AMI id (ami-...)."
  }
}

variable "root_volume_gb" {
  type        = number
  description = "Size of the gp3 root volume, which also holds the LMDB data directory (/var/lib/circa)."
  default     = 40

  validation {
    condition     = var.root_volume_gb >= 20 && var.root_volume_gb <= 1000
    error_message = "root_volume_gb must be between 20 and 1000."
  }
}

variable "release" {
  type = object({
    version = string
    sha256  = string
  })
  description = "The circa release this region runs: a binary tarball s3://<artifact_bucket>/releases/circa-<version>-debian12-amd64.tar.gz and its SHA-256. Changing it starts a rolling instance refresh of this region only."

  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+([-+][0-9A-Za-z.-]+)?$", var.release.version)) && can(regex("^[0-9a-f]{64}$", var.release.sha256))
    error_message = "release.version must be a semantic version and release.sha256 64 lowercase hex digits."
  }
}

variable "artifact_bucket" {
  type        = string
  description = "Name of the S3 bucket in this region holding release tarballs (created by the foundation state)."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifact_bucket))
    error_message = "artifact_bucket must be a valid S3 bucket name."
  }
}

variable "secret_names" {
  type = object({
    jwt      = string
    peer_tls = string
    pg       = string
  })
  description = "Names of the Secrets Manager secrets (replicated to this region by the secrets module) that nodes read at boot."
}

variable "bootstrap" {
  type        = bool
  description = "true only for the very first apply of the first region: its voter starts without --join and bootstraps a new cluster when it finds no peer. Set back to false right after (see README, first deploy)."
  default     = false
}

variable "voter_count" {
  type        = number
  description = "Raft voters in this region (the stable group). DESIGN: one per region, three or five in total; 0 makes a standby-only region (e.g. a fourth region, so the voter count stays odd)."
  default     = 1

  validation {
    condition     = var.voter_count >= 0 && var.voter_count <= 3
    error_message = "voter_count must be 0, 1, 2 or 3."
  }
}

variable "standby_min_size" {
  type        = number
  description = "Standing floor of standby (non-voting, read-serving) nodes in this region."
  default     = 3

  validation {
    condition     = var.standby_min_size >= 0
    error_message = "standby_min_size must be >= 0."
  }
}

variable "standby_max_size" {
  type        = number
  description = "Ceiling of the autoscaled standby group in this region."
  default     = 16

  validation {
    condition     = var.standby_max_size >= var.standby_min_size && var.standby_max_size <= 200
    error_message = "standby_max_size must be >= standby_min_size and <= 200."
  }
}

variable "warm_pool_min_size" {
  type        = number
  description = "Stopped, pre-initialised instances kept in the standby group's warm pool (0 disables the warm pool)."
  default     = 6

  validation {
    condition     = var.warm_pool_min_size >= 0 && var.warm_pool_min_size <= 100
    error_message = "warm_pool_min_size must be between 0 and 100."
  }
}

variable "circa_threads" {
  type        = number
  description = "HTTP threads per node (CIRCA_THREADS). null = one per vCPU (circa's default)."
  default     = null

  validation {
    condition     = var.circa_threads == null || (var.circa_threads >= 1 && var.circa_threads <= 64)
    error_message = "circa_threads must be null or between 1 and 64."
  }
}

variable "anonymous_rate_per_s" {
  type        = number
  description = "circa limits.rate_per_s. Behind the load balancer every anonymous client shares the load balancer's address, so this is set high and per-client limiting is done by the WAF rule."
  default     = 5000

  validation {
    condition     = var.anonymous_rate_per_s >= 1
    error_message = "anonymous_rate_per_s must be >= 1."
  }
}

variable "waf_requests_per_5min_per_ip" {
  type        = number
  description = "WAF rate-based rule: requests per client IP per 5 minutes before blocking (0 disables the WAF)."
  default     = 20000

  validation {
    condition     = var.waf_requests_per_5min_per_ip == 0 || var.waf_requests_per_5min_per_ip >= 100
    error_message = "waf_requests_per_5min_per_ip must be 0 or >= 100 (the WAF minimum)."
  }
}

# ---------------------------------------------------------------- scaling

variable "target_requests_per_node_per_second" {
  type        = number
  description = "Target tracking value: requests/s per node (ALBRequestCountPerTarget is per minute; the module multiplies by 60). README: 10 000 = 2/3 of the 15 000 req/s planning figure."
  default     = 10000

  validation {
    condition     = var.target_requests_per_node_per_second >= 10
    error_message = "target_requests_per_node_per_second must be >= 10."
  }
}

variable "spike_requests_per_node_per_second" {
  type        = number
  description = "Step scaling threshold: when requests/s per node exceed it for one minute, the standby group doubles."
  default     = 12000

  validation {
    condition     = var.spike_requests_per_node_per_second >= var.target_requests_per_node_per_second
    error_message = "spike_requests_per_node_per_second must be >= target_requests_per_node_per_second."
  }
}

variable "lb_reserved_capacity_units" {
  type        = number
  description = "Load balancer capacity units (LCU) reserved on the ALB so a spike does not wait for the ALB to scale (0 = no reservation). README shows the arithmetic."
  default     = 0

  validation {
    condition     = var.lb_reserved_capacity_units >= 0 && var.lb_reserved_capacity_units <= 15000
    error_message = "lb_reserved_capacity_units must be between 0 and 15000."
  }
}

# ---------------------------------------------------------------- deploys

variable "deregistration_delay_seconds" {
  type        = number
  description = "Target group deregistration delay: how long the ALB lets in-flight requests to a leaving node finish."
  default     = 30

  validation {
    condition     = var.deregistration_delay_seconds >= 0 && var.deregistration_delay_seconds <= 3600
    error_message = "deregistration_delay_seconds must be between 0 and 3600."
  }
}

variable "drain_timeout_seconds" {
  type        = number
  description = "Heartbeat timeout of the terminating lifecycle hook that runs `circa drain`. Must cover the deregistration delay plus the Raft hand-off."
  default     = 300

  validation {
    condition     = var.drain_timeout_seconds >= var.deregistration_delay_seconds + 60 && var.drain_timeout_seconds <= 7200
    error_message = "drain_timeout_seconds must be >= deregistration_delay_seconds + 60 (drain after deregistration) and <= 7200."
  }
}

variable "launch_timeout_seconds" {
  type        = number
  description = "Heartbeat timeout of the launching lifecycle hook: time for a node to install, join (stream a snapshot, catch up) and answer 200 on /readyz."
  default     = 900

  validation {
    condition     = var.launch_timeout_seconds >= 120 && var.launch_timeout_seconds <= 7200
    error_message = "launch_timeout_seconds must be between 120 and 7200."
  }
}

variable "instance_warmup_seconds" {
  type        = number
  description = "Default instance warm-up: how long a new node's metrics are left out of scaling decisions."
  default     = 120

  validation {
    condition     = var.instance_warmup_seconds >= 0 && var.instance_warmup_seconds <= 3600
    error_message = "instance_warmup_seconds must be between 0 and 3600."
  }
}

# ---------------------------------------------------------------- DNS

variable "zone_id" {
  type        = string
  description = "Route 53 public hosted zone holding domain_name (certificate validation and the regional record)."

  validation {
    condition     = can(regex("^Z[0-9A-Z]{4,32}$", var.zone_id))
    error_message = "zone_id must be a Route 53 hosted zone id."
  }
}

variable "domain_name" {
  type        = string
  description = "Public API name, e.g. api.circa.example.org. This region also answers on <region>.<domain_name>."

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.domain_name))
    error_message = "domain_name must be a lowercase DNS name."
  }
}

# ---------------------------------------------------------------- observability

variable "alarm_topic_arns" {
  type        = list(string)
  description = "SNS topics notified by this region's alarms."
  default     = []
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the circa JSON log group."
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts."
  }
}

variable "error_rate_threshold_percent" {
  type        = number
  description = "5xx responses as a percentage of requests (per minute) above which the 5xx alarm fires; it also rolls back an instance refresh."
  default     = 1

  validation {
    condition     = var.error_rate_threshold_percent > 0 && var.error_rate_threshold_percent <= 100
    error_message = "error_rate_threshold_percent must be in (0, 100]."
  }
}

variable "p99_latency_threshold_seconds" {
  type        = number
  description = "p99 of TargetResponseTime above which the latency alarm fires (also rolls back an instance refresh)."
  default     = 0.25

  validation {
    condition     = var.p99_latency_threshold_seconds > 0
    error_message = "p99_latency_threshold_seconds must be positive."
  }
}

variable "replication_lag_threshold_entries" {
  type        = number
  description = "Alarm when the worst node's Raft replication lag (log entries behind the leader) stays above this."
  default     = 10000

  validation {
    condition     = var.replication_lag_threshold_entries > 0
    error_message = "replication_lag_threshold_entries must be positive."
  }
}

variable "write_behind_lag_threshold_entries" {
  type        = number
  description = "Alarm when the write-behind outbox (applied but not yet flushed to PostgreSQL) stays above this many entries."
  default     = 50000

  validation {
    condition     = var.write_behind_lag_threshold_entries > 0
    error_message = "write_behind_lag_threshold_entries must be positive."
  }
}
