# Global routing: clients resolve domain_name to the nearest region by
# latency (Route 53 latency records, one per region, aliased to the
# regional ALB). Each record carries a health check on
# https://<region>.<domain>/readyz; a region whose check fails (no ready
# node, region lost) drops out of the answers within
# interval x failure_threshold (30 s by default) and clients go to the next
# nearest region. Route 53 is global: use a provider in us-east-1, where
# health check metrics are published.

resource "aws_route53_health_check" "region" {
  for_each = var.regions

  fqdn              = each.value.regional_fqdn
  port              = 443
  type              = "HTTPS"
  resource_path     = "/readyz"
  request_interval  = var.health_check_interval_seconds
  failure_threshold = var.health_check_failure_threshold
  measure_latency   = true
  enable_sni        = true

  tags = merge(var.tags, { Name = "${var.name}-${each.key}", "circa-cluster" = var.name })
}

resource "aws_route53_record" "latency" {
  for_each = var.regions

  zone_id         = var.zone_id
  name            = var.domain_name
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.region[each.key].id

  latency_routing_policy {
    region = each.key
  }

  alias {
    name                   = each.value.lb_dns_name
    zone_id                = each.value.lb_zone_id
    evaluate_target_health = true
  }
}

resource "aws_cloudwatch_metric_alarm" "region_down" {
  for_each = var.regions

  alarm_name          = "${var.name}-${each.key}-region-down"
  alarm_description   = "Route 53 sees ${each.key} unhealthy (/readyz through its ALB): traffic moved to the other regions."
  namespace           = "AWS/Route53"
  metric_name         = "HealthCheckStatus"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  dimensions          = { HealthCheckId = aws_route53_health_check.region[each.key].id }
  alarm_actions       = var.alarm_topic_arns
  ok_actions          = var.alarm_topic_arns
  tags                = var.tags
}
