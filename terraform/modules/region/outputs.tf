output "vpc_id" {
  description = "VPC of this region."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "CIDR of this region's VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets (nodes, database)."
  value       = aws_subnet.private[*].id
}

output "private_route_table_ids" {
  description = "Route tables of the private subnets (for inter-region peering routes)."
  value       = aws_route_table.private[*].id
}

output "node_security_group_id" {
  description = "Security group of the circa nodes (the database admits it)."
  value       = aws_security_group.node.id
}

output "lb_arn" {
  description = "ARN of the regional Application Load Balancer."
  value       = aws_lb.this.arn
}

output "lb_dns_name" {
  description = "DNS name of the regional load balancer (edge alias target)."
  value       = aws_lb.this.dns_name
}

output "lb_zone_id" {
  description = "Route 53 zone id of the regional load balancer (edge alias target)."
  value       = aws_lb.this.zone_id
}

output "target_group_arn" {
  description = "Target group (health check /readyz) of both node groups."
  value       = aws_lb_target_group.this.arn
}

output "regional_fqdn" {
  description = "<region>.<domain_name>: this region's own name, probed by the edge health check."
  value       = aws_route53_record.regional.fqdn
}

output "autoscaling_group_names" {
  description = "Names of the voter and standby Auto Scaling groups (instance refresh is watched on these)."
  value = {
    voter   = aws_autoscaling_group.voter.name
    standby = aws_autoscaling_group.standby.name
  }
}

output "alarm_names" {
  description = "CloudWatch alarms of this region."
  value = {
    http_5xx_rate    = aws_cloudwatch_metric_alarm.http_5xx_rate.alarm_name
    p99_latency      = aws_cloudwatch_metric_alarm.p99_latency.alarm_name
    replication_lag  = aws_cloudwatch_metric_alarm.replication_lag.alarm_name
    write_behind_lag = aws_cloudwatch_metric_alarm.write_behind_lag.alarm_name
    no_healthy_nodes = aws_cloudwatch_metric_alarm.no_healthy_nodes.alarm_name
    spike            = aws_cloudwatch_metric_alarm.spike.alarm_name
  }
}

output "log_group_name" {
  description = "CloudWatch log group receiving circa's JSON logs from this region."
  value       = aws_cloudwatch_log_group.circa.name
}

output "release" {
  description = "Release this region runs."
  value       = var.release
}
