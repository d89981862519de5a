# prod, state 2 of 3 (foundation -> regions -> edge): three regions, each a
# region module (VPC, ALB, voter and standby groups) and a member of the
# Aurora global database, and a full mesh of VPC peerings between them.
#
# Sizing (terraform/README.md, "Capacity"): per region 1 voter + 5 standbys
# standing (6 x 15k req/s = 90k req/s; two regions carry the 167k req/s spike
# if the third is lost), up to 15 standbys, 6 warm, 500 reserved LCUs.
#
# Deploys: var.releases is per region; scripts/rollout.sh changes one region,
# applies, waits for that region's instance refresh, then the next.

locals {
  name           = "circa-prod"
  primary_region = "us-east-1"

  vpc_cidrs = {
    "us-east-1"      = "10.10.0.0/20"
    "eu-west-1"      = "10.20.0.0/20"
    "ap-northeast-1" = "10.30.0.0/20"
  }
  cluster_regions = keys(local.vpc_cidrs)

  foundation = data.terraform_remote_state.foundation.outputs

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

check "releases_cover_every_region" {
  assert {
    condition     = toset(keys(var.releases)) == toset(local.cluster_regions)
    error_message = "var.releases must name exactly the cluster regions."
  }
}

# ---------------------------------------------------------------- us-east-1

module "region_us_east_1" {
  source    = "../../../modules/region"
  providers = { aws = aws }

  name            = local.name
  region          = "us-east-1"
  cluster_regions = local.cluster_regions
  vpc_cidr        = local.vpc_cidrs["us-east-1"]
  peer_cidrs      = [for k, c in local.vpc_cidrs : c if k != "us-east-1"]
  az_count        = 3

  release         = var.releases["us-east-1"]
  ami_id          = lookup(var.ami_ids, "us-east-1", null)
  artifact_bucket = local.foundation.release_buckets["us-east-1"]
  secret_names    = local.foundation.secret_names
  bootstrap       = var.bootstrap_region == "us-east-1"

  instance_type                       = "c7i.large"
  voter_count                         = 1
  standby_min_size                    = 5
  standby_max_size                    = 15
  warm_pool_min_size                  = 6
  target_requests_per_node_per_second = 10000
  spike_requests_per_node_per_second  = 12000
  lb_reserved_capacity_units          = 500

  deregistration_delay_seconds = 30
  drain_timeout_seconds        = 300

  zone_id          = var.zone_id
  domain_name      = var.domain_name
  alarm_topic_arns = [local.foundation.alarm_topic_arns["us-east-1"]]
  tags             = local.tags
}

module "database_us_east_1" {
  source    = "../../../modules/database"
  providers = { aws = aws }

  name                       = local.name
  region                     = "us-east-1"
  role                       = "primary"
  global_cluster_identifier  = "circa-prod"
  instance_class             = "db.r6g.xlarge"
  instance_count             = 2
  vpc_id                     = module.region_us_east_1.vpc_id
  subnet_ids                 = module.region_us_east_1.private_subnet_ids
  allowed_cidr_blocks        = values(local.vpc_cidrs)
  master_password_secret_arn = local.foundation.pg_master_secret_arn
  alarm_topic_arns           = [local.foundation.alarm_topic_arns["us-east-1"]]
  tags                       = local.tags
}

# ---------------------------------------------------------------- eu-west-1

module "region_eu_west_1" {
  source    = "../../../modules/region"
  providers = { aws = aws.eu_west_1 }

  name            = local.name
  region          = "eu-west-1"
  cluster_regions = local.cluster_regions
  vpc_cidr        = local.vpc_cidrs["eu-west-1"]
  peer_cidrs      = [for k, c in local.vpc_cidrs : c if k != "eu-west-1"]
  az_count        = 3

  release         = var.releases["eu-west-1"]
  ami_id          = lookup(var.ami_ids, "eu-west-1", null)
  artifact_bucket = local.foundation.release_buckets["eu-west-1"]
  secret_names    = local.foundation.secret_names
  bootstrap       = var.bootstrap_region == "eu-west-1"

  instance_type                       = "c7i.large"
  voter_count                         = 1
  standby_min_size                    = 5
  standby_max_size                    = 15
  warm_pool_min_size                  = 6
  target_requests_per_node_per_second = 10000
  spike_requests_per_node_per_second  = 12000
  lb_reserved_capacity_units          = 500

  deregistration_delay_seconds = 30
  drain_timeout_seconds        = 300

  zone_id          = var.zone_id
  domain_name      = var.domain_name
  alarm_topic_arns = [local.foundation.alarm_topic_arns["eu-west-1"]]
  tags             = local.tags
}

module "database_eu_west_1" {
  source    = "../../../modules/database"
  providers = { aws = aws.eu_west_1 }

  name                      = local.name
  region                    = "eu-west-1"
  role                      = "secondary"
  global_cluster_identifier = module.database_us_east_1.global_cluster_identifier
  instance_class            = "db.r6g.xlarge"
  instance_count            = 2
  vpc_id                    = module.region_eu_west_1.vpc_id
  subnet_ids                = module.region_eu_west_1.private_subnet_ids
  allowed_cidr_blocks       = values(local.vpc_cidrs)
  alarm_topic_arns          = [local.foundation.alarm_topic_arns["eu-west-1"]]
  tags                      = local.tags
}

# ---------------------------------------------------------------- ap-northeast-1

module "region_ap_northeast_1" {
  source    = "../../../modules/region"
  providers = { aws = aws.ap_northeast_1 }

  name            = local.name
  region          = "ap-northeast-1"
  cluster_regions = local.cluster_regions
  vpc_cidr        = local.vpc_cidrs["ap-northeast-1"]
  peer_cidrs      = [for k, c in local.vpc_cidrs : c if k != "ap-northeast-1"]
  az_count        = 3

  release         = var.releases["ap-northeast-1"]
  ami_id          = lookup(var.ami_ids, "ap-northeast-1", null)
  artifact_bucket = local.foundation.release_buckets["ap-northeast-1"]
  secret_names    = local.foundation.secret_names
  bootstrap       = var.bootstrap_region == "ap-northeast-1"

  instance_type                       = "c7i.large"
  voter_count                         = 1
  standby_min_size                    = 5
  standby_max_size                    = 15
  warm_pool_min_size                  = 6
  target_requests_per_node_per_second = 10000
  spike_requests_per_node_per_second  = 12000
  lb_reserved_capacity_units          = 500

  deregistration_delay_seconds = 30
  drain_timeout_seconds        = 300

  zone_id          = var.zone_id
  domain_name      = var.domain_name
  alarm_topic_arns = [local.foundation.alarm_topic_arns["ap-northeast-1"]]
  tags             = local.tags
}

module "database_ap_northeast_1" {
  source    = "../../../modules/database"
  providers = { aws = aws.ap_northeast_1 }

  name                      = local.name
  region                    = "ap-northeast-1"
  role                      = "secondary"
  global_cluster_identifier = module.database_us_east_1.global_cluster_identifier
  instance_class            = "db.r6g.xlarge"
  instance_count            = 2
  vpc_id                    = module.region_ap_northeast_1.vpc_id
  subnet_ids                = module.region_ap_northeast_1.private_subnet_ids
  allowed_cidr_blocks       = values(local.vpc_cidrs)
  alarm_topic_arns          = [local.foundation.alarm_topic_arns["ap-northeast-1"]]
  tags                      = local.tags
}

# ---------------------------------------------------------------- peering (full mesh)

module "peering_us_east_1_eu_west_1" {
  source = "../../../modules/peering"
  providers = {
    aws.requester = aws
    aws.accepter  = aws.eu_west_1
  }

  name = local.name
  requester = {
    region          = "us-east-1"
    vpc_id          = module.region_us_east_1.vpc_id
    vpc_cidr        = module.region_us_east_1.vpc_cidr
    route_table_ids = module.region_us_east_1.private_route_table_ids
  }
  accepter = {
    region          = "eu-west-1"
    vpc_id          = module.region_eu_west_1.vpc_id
    vpc_cidr        = module.region_eu_west_1.vpc_cidr
    route_table_ids = module.region_eu_west_1.private_route_table_ids
  }
  tags = local.tags
}

module "peering_us_east_1_ap_northeast_1" {
  source = "../../../modules/peering"
  providers = {
    aws.requester = aws
    aws.accepter  = aws.ap_northeast_1
  }

  name = local.name
  requester = {
    region          = "us-east-1"
    vpc_id          = module.region_us_east_1.vpc_id
    vpc_cidr        = module.region_us_east_1.vpc_cidr
    route_table_ids = module.region_us_east_1.private_route_table_ids
  }
  accepter = {
    region          = "ap-northeast-1"
    vpc_id          = module.region_ap_northeast_1.vpc_id
    vpc_cidr        = module.region_ap_northeast_1.vpc_cidr
    route_table_ids = module.region_ap_northeast_1.private_route_table_ids
  }
  tags = local.tags
}

module "peering_eu_west_1_ap_northeast_1" {
  source = "../../../modules/peering"
  providers = {
    aws.requester = aws.eu_west_1
    aws.accepter  = aws.ap_northeast_1
  }

  name = local.name
  requester = {
    region          = "eu-west-1"
    vpc_id          = module.region_eu_west_1.vpc_id
    vpc_cidr        = module.region_eu_west_1.vpc_cidr
    route_table_ids = module.region_eu_west_1.private_route_table_ids
  }
  accepter = {
    region          = "ap-northeast-1"
    vpc_id          = module.region_ap_northeast_1.vpc_id
    vpc_cidr        = module.region_ap_northeast_1.vpc_cidr
    route_table_ids = module.region_ap_northeast_1.private_route_table_ids
  }
  tags = local.tags
}
