variable "state_bucket" {
  type        = string
  description = "S3 bucket holding the Terraform states (to read the foundation and regions outputs)."
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

variable "drained_regions" {
  type        = list(string)
  description = "Regions taken out of DNS on purpose (removal, maintenance); their records are removed, the region keeps running."
  default     = []
}
