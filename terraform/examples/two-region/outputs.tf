output "url" {
  description = "Where clients reach the service."
  value       = "https://${module.edge.fqdn}"
}

output "regional_urls" {
  description = "Each region directly (bypassing latency routing)."
  value = {
    "eu-west-1" = "https://${module.region_eu_west_1.regional_fqdn}"
    "us-east-1" = "https://${module.region_us_east_1.regional_fqdn}"
  }
}

output "secret_names" {
  description = "Secrets to fill before the first node boots (README: first deploy)."
  value       = module.secrets.secret_names
}

output "global_writer_endpoint" {
  description = "Host for the circa_app DSN stored in the pg secret."
  value       = module.database_eu_west_1.global_writer_endpoint
}
