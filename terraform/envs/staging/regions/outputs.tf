output "edge_regions" {
  description = "Per region: load balancer and regional name, consumed by the edge state."
  value = {
    "us-east-1" = {
      lb_dns_name   = module.region_us_east_1.lb_dns_name
      lb_zone_id    = module.region_us_east_1.lb_zone_id
      regional_fqdn = module.region_us_east_1.regional_fqdn
    }
    "eu-west-1" = {
      lb_dns_name   = module.region_eu_west_1.lb_dns_name
      lb_zone_id    = module.region_eu_west_1.lb_zone_id
      regional_fqdn = module.region_eu_west_1.regional_fqdn
    }
  }
}

output "autoscaling_group_names" {
  description = "Voter and standby groups per region (scripts/rollout.sh watches their instance refreshes)."
  value = {
    "us-east-1" = module.region_us_east_1.autoscaling_group_names
    "eu-west-1" = module.region_eu_west_1.autoscaling_group_names
  }
}

output "global_writer_endpoint" {
  description = "Aurora global writer endpoint: host of the circa_app DSN in the pg secret."
  value       = module.database_us_east_1.global_writer_endpoint
}

output "log_groups" {
  description = "circa JSON log group per region."
  value = {
    "us-east-1" = module.region_us_east_1.log_group_name
    "eu-west-1" = module.region_eu_west_1.log_group_name
  }
}
