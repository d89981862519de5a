output "health_check_ids" {
  description = "Route 53 health check per region."
  value       = { for k, h in aws_route53_health_check.region : k => h.id }
}

output "fqdn" {
  description = "The global name clients use."
  value       = var.domain_name
}

output "regions" {
  description = "Regions currently receiving traffic through the latency records."
  value       = sort(keys(aws_route53_record.latency))
}
