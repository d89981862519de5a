# Logs and alarms. circa writes JSON lines on stderr; systemd appends them to
# /var/log/circa/circa.log and the CloudWatch agent ships that file to the
# log group below (one stream per instance). The same agent scrapes
# http://127.0.0.1:8080/metrics (Prometheus text) and publishes the circa_*
# series named in the template as CloudWatch metrics (embedded metric
# format) in local.metrics_namespace, dimensions cluster and region.

locals {
  metrics_namespace = "Circa"

  # Alarms that stop and roll back an instance refresh.
  rollback_alarm_names = [
    aws_cloudwatch_metric_alarm.http_5xx_rate.alarm_name,
    aws_cloudwatch_metric_alarm.p99_latency.alarm_name,
  ]

  circa_dimensions = {
    cluster = var.name
    region  = var.region
  }
}

resource "aws_cloudwatch_log_group" "circa" {
  name              = "/circa/${var.name}/${var.region}"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

# Counts problems logged by any node ({"level":"error",...} lines).
resource "aws_cloudwatch_log_metric_filter" "errors" {
  name           = "circa-errors"
  log_group_name = aws_cloudwatch_log_group.circa.name
  pattern        = "{ $.level = \"error\" }"

  metric_transformation {
    name          = "log_errors"
    namespace     = local.metrics_namespace
    value         = "1"
    default_value = "0"
  }
}

# ---------------------------------------------------------------- rollback alarms

resource "aws_cloudwatch_metric_alarm" "http_5xx_rate" {
  alarm_name          = "${local.prefix}-5xx-rate"
  alarm_description   = "5xx (from circa or the ALB) above ${var.error_rate_threshold_percent}% of requests for 3 of 5 minutes."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.error_rate_threshold_percent
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"

  metric_query {
    id          = "rate"
    expression  = "100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / FILL(requests, 1)"
    label       = "5xx percent"
    return_data = true
  }

  metric_query {
    id = "target5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      stat        = "Sum"
      period      = 60
      dimensions  = { LoadBalancer = aws_lb.this.arn_suffix }
    }
  }

  metric_query {
    id = "elb5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      stat        = "Sum"
      period      = 60
      dimensions  = { LoadBalancer = aws_lb.this.arn_suffix }
    }
  }

  metric_query {
    id = "requests"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      stat        = "Sum"
      period      = 60
      dimensions  = { LoadBalancer = aws_lb.this.arn_suffix }
    }
  }

  alarm_actions = var.alarm_topic_arns
  ok_actions    = var.alarm_topic_arns
  tags          = local.tags
}

resource "aws_cloudwatch_metric_alarm" "p99_latency" {
  alarm_name          = "${local.prefix}-p99-latency"
  alarm_description   = "p99 target response time above ${var.p99_latency_threshold_seconds}s for 3 of 5 minutes."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.p99_latency_threshold_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  dimensions          = { LoadBalancer = aws_lb.this.arn_suffix }
  alarm_actions       = var.alarm_topic_arns
  ok_actions          = var.alarm_topic_arns
  tags                = local.tags
}

# ---------------------------------------------------------------- cluster alarms

# The worst node's Raft lag in this region (entries behind the leader's
# commit index). Metric planned with replication (issue 4).
resource "aws_cloudwatch_metric_alarm" "replication_lag" {
  alarm_name          = "${local.prefix}-replication-lag"
  alarm_description   = "A node in ${var.region} is more than ${var.replication_lag_threshold_entries} log entries behind for 5 minutes."
  namespace           = local.metrics_namespace
  metric_name         = "circa_replication_lag_entries"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.replication_lag_threshold_entries
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  dimensions          = local.circa_dimensions
  alarm_actions       = var.alarm_topic_arns
  ok_actions          = var.alarm_topic_arns
  tags                = local.tags
}

# The outbox not yet flushed to PostgreSQL (only the leader's flusher
# reports a non-zero value). Metric planned with write-behind (issue 3). At
# the high-water mark circa refuses writes with 503, so this alarm must fire
# well before.
resource "aws_cloudwatch_metric_alarm" "write_behind_lag" {
  alarm_name          = "${local.prefix}-write-behind-lag"
  alarm_description   = "More than ${var.write_behind_lag_threshold_entries} applied commands not yet in PostgreSQL for 5 minutes."
  namespace           = local.metrics_namespace
  metric_name         = "circa_write_behind_lag_entries"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.write_behind_lag_threshold_entries
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  dimensions          = local.circa_dimensions
  alarm_actions       = var.alarm_topic_arns
  ok_actions          = var.alarm_topic_arns
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "no_healthy_nodes" {
  alarm_name          = "${local.prefix}-no-healthy-nodes"
  alarm_description   = "No node in ${var.region} answers 200 on /readyz."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HealthyHostCount"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 2
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"

  dimensions = {
    TargetGroup  = aws_lb_target_group.this.arn_suffix
    LoadBalancer = aws_lb.this.arn_suffix
  }

  alarm_actions = var.alarm_topic_arns
  ok_actions    = var.alarm_topic_arns
  tags          = local.tags
}
