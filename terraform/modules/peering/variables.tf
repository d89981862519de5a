variable "name" {
  type        = string
  description = "Deployment name, e.g. \"circa-prod\"."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name))
    error_message = "name must be 3-21 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "requester" {
  type = object({
    region          = string
    vpc_id          = string
    vpc_cidr        = string
    route_table_ids = list(string)
  })
  description = "Requesting side (provider aws.requester): region, VPC, CIDR and the private route tables to add a route to."
}

variable "accepter" {
  type = object({
    region          = string
    vpc_id          = string
    vpc_cidr        = string
    route_table_ids = list(string)
  })
  description = "Accepting side (provider aws.accepter)."

  validation {
    condition     = var.accepter.region != var.requester.region
    error_message = "Peering here is between two different regions."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource."
  default     = {}
}
