# staging, state 2 of 3 (foundation -> regions -> edge): the prod shape at
# small scale in two regions. Three voters (two in us-east-1, one in
# eu-west-1): losing eu-west-1 keeps a quorum, losing us-east-1 does not
# (staging accepts that; prod runs one voter in each of three regions).
# No warm pool, no LCU reservation.

locals {
  name           = "circa-staging"
  primary_region = "us-east-1"

  vpc_cidrs = {
    "us-east-1" = "10.110.0.0/20"
    "eu-west-1" = "10.120.0.0/20"
  }
  cluster_regions = keys(local.vpc_cidrs)

  foundation = data.terraform_remote_state.foundation.outputs

  tags = {
    project     = "circa"
    environment = "staging"
    managed-by  = "terraform"
  }
}

data "terraform_remote_state" "foundation" {
  backend = "s3"

  config = {
    bucket = var.state_bucket
    key    = "staging/foundation.tfstate"
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
  az_count        = 2

  release         = var.releases["us-east-1"]
  ami_id          = lookup(var.ami_ids, "us-east-1", null)
  artifact_bucket = local.foundation.release_buckets["us-east-1"]
  secret_names    = local.foundation.secret_names
  bootstrap       = var.bootstrap_region == "us-east-1"

  instance_type              = "c7i.large"
  voter_count                = 2
  standby_min_size           = 1
  standby_max_size           = 4
  warm_pool_min_size         = 0
  lb_reserved_capacity_units = 0

  deregistration_delay_seconds = 15
  drain_timeout_seconds        = 180

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
  global_cluster_identifier  = "circa-staging"
  instance_class             = "db.r6g.large"
  instance_count             = 1
  vpc_id                     = module.region_us_east_1.vpc_id
  subnet_ids                 = module.region_us_east_1.private_subnet_ids
  allowed_cidr_blocks        = values(local.vpc_cidrs)
  master_password_secret_arn = local.foundation.pg_master_secret_arn
  deletion_protection        = false
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
  az_count        = 2

  release         = var.releases["eu-west-1"]
  ami_id          = lookup(var.ami_ids, "eu-west-1", null)
  artifact_bucket = local.foundation.release_buckets["eu-west-1"]
  secret_names    = local.foundation.secret_names
  bootstrap       = var.bootstrap_region == "eu-west-1"

  instance_type              = "c7i.large"
  voter_count                = 1
  standby_min_size           = 1
  standby_max_size           = 4
  warm_pool_min_size         = 0
  lb_reserved_capacity_units = 0

  deregistration_delay_seconds = 15
  drain_timeout_seconds        = 180

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
  instance_class            = "db.r6g.large"
  instance_count            = 1
  vpc_id                    = module.region_eu_west_1.vpc_id
  subnet_ids                = module.region_eu_west_1.private_subnet_ids
  allowed_cidr_blocks       = values(local.vpc_cidrs)
  alarm_topic_arns          = [local.foundation.alarm_topic_arns["eu-west-1"]]
  tags                      = local.tags
}

# ---------------------------------------------------------------- peering

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
