variable "zone_id" {
  type        = string
  description = "Route 53 public hosted zone of domain_name."
}

variable "domain_name" {
  type        = string
  description = "Public API name, e.g. api.circa-demo.example.org."
}

variable "release" {
  type = object({
    version = string
    sha256  = string
  })
  description = "circa release run in both regions (tarball uploaded to both release buckets beforehand)."
}

variable "release_buckets" {
  type        = map(string)
  description = "Existing release bucket per region (keys eu-west-1 and us-east-1)."
}

variable "bootstrap" {
  type        = bool
  description = "true for the first apply only: the eu-west-1 voter bootstraps the cluster."
  default     = false
}
