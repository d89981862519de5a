variable "name" {
  type        = string
  description = "Deployment name, e.g. \"circa-prod\". Secrets are named <name>/<secret>."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "replica_regions" {
  type        = list(string)
  description = "Regions (other than the provider's) every secret is replicated to, so a node reads its secrets from its own region even when the primary region is gone."

  validation {
    condition     = length(var.replica_regions) == length(distinct(var.replica_regions))
    error_message = "replica_regions must not contain duplicates."
  }
}

variable "kms_key_id" {
  type        = string
  description = "KMS key for the primary copy (null = the aws/secretsmanager key)."
  default     = null
}

variable "replica_kms_key_ids" {
  type        = map(string)
  description = "KMS key per replica region (regions not listed use their aws/secretsmanager key)."
  default     = {}
}

variable "recovery_window_in_days" {
  type        = number
  description = "Days a deleted secret can still be restored."
  default     = 30

  validation {
    condition     = var.recovery_window_in_days == 0 || (var.recovery_window_in_days >= 7 && var.recovery_window_in_days <= 30)
    error_message = "recovery_window_in_days must be 0 or between 7 and 30."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
