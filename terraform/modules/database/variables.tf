variable "name" {
  type        = string
  description = "Deployment name, e.g. \"circa-prod\"."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region of this cluster member (the aws provider's region)."
}

variable "role" {
  type        = string
  description = "\"primary\" creates the Aurora global cluster and its writer cluster; \"secondary\" adds a read-only cluster in this region to it."

  validation {
    condition     = contains(["primary", "secondary"], var.role)
    error_message = "role must be \"primary\" or \"secondary\"."
  }
}

variable "global_cluster_identifier" {
  type        = string
  description = "Identifier of the Aurora global cluster (created by the primary, joined by secondaries)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}$", var.global_cluster_identifier))
    error_message = "global_cluster_identifier must be lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "engine_version" {
  type        = string
  description = "Aurora PostgreSQL engine version (the same on every member)."
  default     = "16.6"

  validation {
    condition     = can(regex("^1[4-9]\\.[0-9]+$", var.engine_version))
    error_message = "engine_version must be an Aurora PostgreSQL 14+ version such as 16.6."
  }
}

variable "instance_class" {
  type        = string
  description = "DB instance class (global databases need r-class or larger)."
  default     = "db.r6g.large"

  validation {
    condition     = can(regex("^db\\.", var.instance_class))
    error_message = "instance_class must start with db."
  }
}

variable "instance_count" {
  type        = number
  description = "DB instances in this member cluster (the primary's first is the writer)."
  default     = 2

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 15
    error_message = "instance_count must be between 1 and 15."
  }
}

variable "vpc_id" {
  type        = string
  description = "VPC of the region (from the region module)."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets for the DB subnet group (at least two AZs)."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs at least two subnets in different AZs."
  }
}

variable "allowed_cidr_blocks" {
  type        = list(string)
  description = "VPC CIDRs of every circa region: the Raft leader's flusher, wherever it runs, writes through the global writer endpoint."

  validation {
    condition     = alltrue([for c in var.allowed_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "allowed_cidr_blocks must be valid IPv4 CIDRs."
  }
}

variable "master_password_secret_arn" {
  type        = string
  description = "Secret holding the master password (primary only; written by an operator, read ephemerally, never stored in state). null for secondaries."
  default     = null

  validation {
    condition     = var.master_password_secret_arn == null || can(regex("^arn:[a-z-]+:secretsmanager:", var.master_password_secret_arn))
    error_message = "master_password_secret_arn must be null or a Secrets Manager ARN."
  }
}

variable "master_password_version" {
  type        = number
  description = "Increment after putting a new master password into the secret: Terraform then sends it to Aurora (write-only argument)."
  default     = 1

  validation {
    condition     = var.master_password_version >= 1
    error_message = "master_password_version must be >= 1."
  }
}

variable "backup_retention_days" {
  type        = number
  description = "Automated backup retention of the primary (point-in-time recovery window)."
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse deletion of the clusters (turn off only to remove a region on purpose)."
  default     = true
}

variable "replication_lag_threshold_ms" {
  type        = number
  description = "Alarm when this secondary's AuroraGlobalDBReplicationLag stays above this (ms)."
  default     = 5000

  validation {
    condition     = var.replication_lag_threshold_ms > 0
    error_message = "replication_lag_threshold_ms must be positive."
  }
}

variable "alarm_topic_arns" {
  type        = list(string)
  description = "SNS topics notified by the database alarms."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
