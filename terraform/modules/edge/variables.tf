variable "name" {
  type        = string
  description = "Deployment name, e.g. \"circa-prod\"."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "zone_id" {
  type        = string
  description = "Route 53 public hosted zone of domain_name."

  validation {
    condition     = can(regex("^Z[0-9A-Z]{4,32}$", var.zone_id))
    error_message = "zone_id must be a Route 53 hosted zone id."
  }
}

variable "domain_name" {
  type        = string
  description = "Public API name clients use, e.g. api.circa.example.org."

  validation {
    condition     = can(regex("^([a-z0-9-]+\\.)+[a-z]{2,}$", var.domain_name))
    error_message = "domain_name must be a lowercase DNS name."
  }
}

variable "regions" {
  type = map(object({
    lb_dns_name   = string
    lb_zone_id    = string
    regional_fqdn = string
  }))
  description = "Serving regions (key: AWS region name) and their load balancers, from the regions state."

  validation {
    condition     = length(var.regions) >= 1
    error_message = "At least one region is needed."
  }
}

variable "health_check_interval_seconds" {
  type        = number
  description = "Route 53 health check request interval (10 or 30)."
  default     = 10

  validation {
    condition     = contains([10, 30], var.health_check_interval_seconds)
    error_message = "health_check_interval_seconds must be 10 or 30."
  }
}

variable "health_check_failure_threshold" {
  type        = number
  description = "Consecutive failed checks before a region leaves DNS."
  default     = 3

  validation {
    condition     = var.health_check_failure_threshold >= 1 && var.health_check_failure_threshold <= 10
    error_message = "health_check_failure_threshold must be between 1 and 10."
  }
}

variable "alarm_topic_arns" {
  type        = list(string)
  description = "SNS topics (in us-east-1, where Route 53 health check metrics live) for region-down alarms."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
