output "fqdn" {
  description = "The global name clients use."
  value       = module.edge.fqdn
}

output "serving_regions" {
  description = "Regions in DNS."
  value       = module.edge.regions
}

output "health_check_ids" {
  description = "Route 53 health check per region."
  value       = module.edge.health_check_ids
}
