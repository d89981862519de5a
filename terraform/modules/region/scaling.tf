# Spikes without manual action (README "Capacity" has the numbers):
#  * a standing floor (voters + standby_min_size) sized so the surviving
#    regions carry a spike's first minutes when one region is lost;
#  * target tracking on ALBRequestCountPerTarget keeps ~target req/s per node;
#  * step scaling doubles the standby group when a minute's requests per node
#    exceed the spike threshold (target tracking alone adds capacity
#    proportionally and waits for three datapoints);
#  * the warm pool makes each doubling a start of stopped, installed
#    instances rather than a cold boot;
#  * the ALB's reserved LCUs (main.tf) keep the load balancer itself ahead.

locals {
  # CloudWatch dimension value for the target group's request count metric.
  resource_label = "${aws_lb.this.arn_suffix}/${aws_lb_target_group.this.arn_suffix}"
}

resource "aws_autoscaling_policy" "requests_per_node" {
  name                      = "requests-per-node"
  autoscaling_group_name    = aws_autoscaling_group.standby.name
  policy_type               = "TargetTrackingScaling"
  estimated_instance_warmup = var.instance_warmup_seconds

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = local.resource_label
    }

    # The metric is requests per target per minute.
    target_value = var.target_requests_per_node_per_second * 60
  }
}

resource "aws_autoscaling_policy" "spike_double" {
  name                      = "spike-double"
  autoscaling_group_name    = aws_autoscaling_group.standby.name
  policy_type               = "StepScaling"
  adjustment_type           = "PercentChangeInCapacity"
  min_adjustment_magnitude  = 2
  metric_aggregation_type   = "Maximum"
  estimated_instance_warmup = var.instance_warmup_seconds

  # +100 % while the alarm is in ALARM; Auto Scaling re-evaluates the
  # policy every minute, and instances still warming count as capacity, so
  # it doubles once per warm-up rather than once per minute.
  step_adjustment {
    metric_interval_lower_bound = 0
    scaling_adjustment          = 100
  }
}

resource "aws_cloudwatch_metric_alarm" "spike" {
  alarm_name          = "${local.prefix}-spike"
  alarm_description   = "Requests per node above ${var.spike_requests_per_node_per_second}/s for a minute: double the standby group."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "RequestCountPerTarget"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  datapoints_to_alarm = 1
  threshold           = var.spike_requests_per_node_per_second * 60
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"

  dimensions = {
    TargetGroup = aws_lb_target_group.this.arn_suffix
  }

  alarm_actions = [aws_autoscaling_policy.spike_double.arn]
  tags          = local.tags
}
