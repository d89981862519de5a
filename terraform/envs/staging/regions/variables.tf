variable "state_bucket" {
  type        = string
  description = "S3 bucket holding the Terraform states (to read the foundation state's outputs)."
}

variable "state_region" {
  type        = string
  description = "Region of the state bucket."
  default     = "us-east-1"
}

variable "zone_id" {
  type        = string
  description = "Route 53 public hosted zone of domain_name."
}

variable "domain_name" {
  type        = string
  description = "Public API name, e.g. api.circa.example.org."
}

variable "releases" {
  type = map(object({
    version = string
    sha256  = string
  }))
  description = "circa release per region. Change ONE region at a time (terraform/scripts/rollout.sh does): each change starts that region's instance refresh, which rolls back by itself on the 5xx or p99 alarm."

  validation {
    condition     = length(distinct([for r in values(var.releases) : r.version])) <= 2
    error_message = "At most two releases may run at once (the current one and the one being rolled out)."
  }
}

variable "bootstrap_region" {
  type        = string
  description = "Region whose voter bootstraps a new cluster. Set only for the first apply ever (README: first deploy), then back to null."
  default     = null
}

variable "ami_ids" {
  type        = map(string)
  description = "Pinned Debian 12 AMI per region (missing: latest from the public SSM parameter)."
  default     = {}
}
