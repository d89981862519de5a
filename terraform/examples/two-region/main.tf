# Two-region composition in one state (the envs/ split it into three):
# secrets replicated to both regions, eu-west-1 (two voters, Aurora writer)
# and us-east-1 (one voter, Aurora secondary), peered VPCs, latency routing.
# Three voters over two regions: losing us-east-1 keeps a quorum, losing
# eu-west-1 does not. Use three regions (envs/prod) to survive any one.

locals {
  name = "circa-demo"

  vpc_cidrs = {
    "eu-west-1" = "10.50.0.0/20"
    "us-east-1" = "10.60.0.0/20"
  }
  cluster_regions = keys(local.vpc_cidrs)
  tags            = { project = "circa", environment = "example" }
}

module "secrets" {
  source = "../../modules/secrets"

  name                    = local.name
  replica_regions         = ["us-east-1"]
  recovery_window_in_days = 7
  tags                    = local.tags
}

module "region_eu_west_1" {
  source = "../../modules/region"

  name            = local.name
  region          = "eu-west-1"
  cluster_regions = local.cluster_regions
  vpc_cidr        = local.vpc_cidrs["eu-west-1"]
  peer_cidrs      = [local.vpc_cidrs["us-east-1"]]
  az_count        = 2
  release         = var.release
  artifact_bucket = var.release_buckets["eu-west-1"]
  secret_names    = module.secrets.secret_names
  bootstrap       = var.bootstrap
  voter_count     = 2
  zone_id         = var.zone_id
  domain_name     = var.domain_name
  tags            = local.tags
}

module "region_us_east_1" {
  source    = "../../modules/region"
  providers = { aws = aws.us_east_1 }

  name                         = local.name
  region                       = "us-east-1"
  cluster_regions              = local.cluster_regions
  vpc_cidr                     = local.vpc_cidrs["us-east-1"]
  peer_cidrs                   = [local.vpc_cidrs["eu-west-1"]]
  az_count                     = 2
  release                      = var.release
  artifact_bucket              = var.release_buckets["us-east-1"]
  secret_names                 = module.secrets.secret_names
  voter_count                  = 1
  standby_min_size             = 1
  standby_max_size             = 4
  warm_pool_min_size           = 2
  deregistration_delay_seconds = 20
  drain_timeout_seconds        = 240
  zone_id                      = var.zone_id
  domain_name                  = var.domain_name
  tags                         = local.tags
}

module "database_eu_west_1" {
  source = "../../modules/database"

  name                       = local.name
  region                     = "eu-west-1"
  role                       = "primary"
  global_cluster_identifier  = local.name
  instance_count             = 1
  vpc_id                     = module.region_eu_west_1.vpc_id
  subnet_ids                 = module.region_eu_west_1.private_subnet_ids
  allowed_cidr_blocks        = values(local.vpc_cidrs)
  master_password_secret_arn = module.secrets.pg_master_secret_arn
  deletion_protection        = false
  tags                       = local.tags
}

module "database_us_east_1" {
  source    = "../../modules/database"
  providers = { aws = aws.us_east_1 }

  name                      = local.name
  region                    = "us-east-1"
  role                      = "secondary"
  global_cluster_identifier = module.database_eu_west_1.global_cluster_identifier
  instance_count            = 1
  vpc_id                    = module.region_us_east_1.vpc_id
  subnet_ids                = module.region_us_east_1.private_subnet_ids
  allowed_cidr_blocks       = values(local.vpc_cidrs)
  deletion_protection       = false
  tags                      = local.tags
}

module "peering" {
  source = "../../modules/peering"
  providers = {
    aws.requester = aws
    aws.accepter  = aws.us_east_1
  }

  name = local.name
  requester = {
    region          = "eu-west-1"
    vpc_id          = module.region_eu_west_1.vpc_id
    vpc_cidr        = module.region_eu_west_1.vpc_cidr
    route_table_ids = module.region_eu_west_1.private_route_table_ids
  }
  accepter = {
    region          = "us-east-1"
    vpc_id          = module.region_us_east_1.vpc_id
    vpc_cidr        = module.region_us_east_1.vpc_cidr
    route_table_ids = module.region_us_east_1.private_route_table_ids
  }
  tags = local.tags
}

module "edge" {
  source    = "../../modules/edge"
  providers = { aws = aws.us_east_1 }

  name        = local.name
  zone_id     = var.zone_id
  domain_name = var.domain_name
  regions = {
    "eu-west-1" = {
      lb_dns_name   = module.region_eu_west_1.lb_dns_name
      lb_zone_id    = module.region_eu_west_1.lb_zone_id
      regional_fqdn = module.region_eu_west_1.regional_fqdn
    }
    "us-east-1" = {
      lb_dns_name   = module.region_us_east_1.lb_dns_name
      lb_zone_id    = module.region_us_east_1.lb_zone_id
      regional_fqdn = module.region_us_east_1.regional_fqdn
    }
  }
  tags = local.tags
}
