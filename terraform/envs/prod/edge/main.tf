# prod, state 3 of 3 (foundation -> regions -> edge): latency-based routing to
# the nearest healthy region, health-checked on /readyz.

locals {
  name    = "circa-prod"
  regions = data.terraform_remote_state.regions.outputs.edge_regions

  tags = {
    project     = "circa"
    environment = "prod"
    managed-by  = "terraform"
  }
}

data "terraform_remote_state" "foundation" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "prod/foundation.tfstate"
    region = var.state_region
  }
}

data "terraform_remote_state" "regions" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "prod/regions.tfstate"
    region = var.state_region
  }
}

module "edge" {
  source = "../../../modules/edge"

  name        = local.name
  zone_id     = var.zone_id
  domain_name = var.domain_name
  regions = {
    for r, v in local.regions : r => v if !contains(var.drained_regions, r)
  }
  health_check_interval_seconds  = 10
  health_check_failure_threshold = 3
  alarm_topic_arns               = [data.terraform_remote_state.foundation.outputs.alarm_topic_arns["us-east-1"]]
  tags                           = local.tags
}
