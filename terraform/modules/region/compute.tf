# Nodes: one launch template per role, a fixed-size voter group and an
# autoscaled standby group with a warm pool. Both roll with instance refresh
# when the launch template changes (a new release, AMI or setting).

data "aws_ssm_parameter" "debian12" {
  name = "/aws/service/debian/release/bookworm/latest/amd64"
}

locals {
  image_id = coalesce(var.ami_id, nonsensitive(data.aws_ssm_parameter.debian12.value))

  roles = {
    voter = {
      asg_name = "${local.prefix}-voter"
    }
    standby = {
      asg_name = "${local.prefix}-standby"
    }
  }

  launch_hook_name    = "circa-ready"
  terminate_hook_name = "circa-drain"
}

# ---------------------------------------------------------------- IAM

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${local.prefix}-node"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

data "aws_iam_policy_document" "node" {
  statement {
    sid     = "ReadClusterSecrets"
    actions = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = [
      for n in values(var.secret_names) :
      "arn:${data.aws_partition.current.partition}:secretsmanager:${var.region}:${data.aws_caller_identity.current.account_id}:secret:${n}-*"
    ]
  }

  statement {
    sid       = "ReadReleases"
    actions   = ["s3:GetObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.artifact_bucket}/releases/*"]
  }

  # Peer discovery for --join (instances tagged circa-cluster=<name> in every
  # cluster region). DescribeInstances has no resource-level permissions.
  statement {
    sid       = "DiscoverPeers"
    actions   = ["ec2:DescribeInstances"]
    resources = ["*"]
  }

  statement {
    sid     = "CompleteOwnLifecycleHooks"
    actions = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
    resources = [
      for r in values(local.roles) :
      "arn:${data.aws_partition.current.partition}:autoscaling:${var.region}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${r.asg_name}"
    ]
  }
}

resource "aws_iam_role_policy" "node" {
  name   = "circa-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

# Shell access through Session Manager (no SSH, no key pairs) and the
# CloudWatch agent (logs, Prometheus scrape).
resource "aws_iam_role_policy_attachment" "node_managed" {
  for_each = toset([
    "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore",
    "arn:${data.aws_partition.current.partition}:iam::aws:policy/CloudWatchAgentServerPolicy",
  ])

  role       = aws_iam_role.node.name
  policy_arn = each.value
}

resource "aws_iam_instance_profile" "node" {
  name = "${local.prefix}-node"
  role = aws_iam_role.node.name
  tags = local.tags
}

# ---------------------------------------------------------------- launch templates

resource "aws_launch_template" "node" {
  for_each = local.roles

  name                   = "${local.prefix}-${each.key}"
  image_id               = local.image_id
  instance_type          = var.instance_type
  update_default_version = true
  vpc_security_group_ids = [aws_security_group.node.id]

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  monitoring {
    enabled = true
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_gb
      iops                  = 6000
      throughput            = 250
      encrypted             = true
      delete_on_termination = true
    }
  }

  user_data = base64encode(templatefile("${path.module}/templates/cloud-init.yaml.tftpl", {
    name                = var.name
    region              = var.region
    role                = each.key
    asg_name            = each.value.asg_name
    cluster_regions     = var.cluster_regions
    bootstrap           = var.bootstrap && each.key == "voter"
    release_version     = var.release.version
    release_sha256      = var.release.sha256
    artifact_bucket     = var.artifact_bucket
    secret_jwt          = var.secret_names.jwt
    secret_peer_tls     = var.secret_names.peer_tls
    secret_pg           = var.secret_names.pg
    http_port           = local.http_port
    peer_port           = local.peer_port
    threads             = var.circa_threads == null ? "" : tostring(var.circa_threads)
    rate_per_s          = var.anonymous_rate_per_s
    public_url          = "https://${var.domain_name}"
    log_group           = aws_cloudwatch_log_group.circa.name
    metrics_namespace   = local.metrics_namespace
    launch_hook         = local.launch_hook_name
    terminate_hook      = local.terminate_hook_name
    deregistration_wait = var.deregistration_delay_seconds
    drain_budget        = var.drain_timeout_seconds - var.deregistration_delay_seconds - 30
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-${each.key}", "circa-role" = each.key })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${local.prefix}-${each.key}" })
  }

  tags = local.tags
}

# ---------------------------------------------------------------- voters

# The stable group: var.voter_count nodes that hold Raft votes. Never
# autoscaled. A replacement joins as a standby and promotes itself once
# caught up; the node it replaces drains (hands leadership and its vote
# over) before it terminates. Refresh replaces one voter at a time,
# launching the new one before terminating the old (max 200 %).
resource "aws_autoscaling_group" "voter" {
  name                      = local.roles.voter.asg_name
  vpc_zone_identifier       = aws_subnet.private[*].id
  min_size                  = var.voter_count
  max_size                  = var.voter_count * 2
  desired_capacity          = var.voter_count
  target_group_arns         = [aws_lb_target_group.this.arn]
  health_check_type         = "ELB"
  health_check_grace_period = var.launch_timeout_seconds
  default_instance_warmup   = var.instance_warmup_seconds
  protect_from_scale_in     = false
  capacity_rebalance        = false
  wait_for_capacity_timeout = "0"

  launch_template {
    id      = aws_launch_template.node["voter"].id
    version = aws_launch_template.node["voter"].latest_version
  }

  instance_maintenance_policy {
    min_healthy_percentage = 100
    max_healthy_percentage = 200
  }

  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 100
      max_healthy_percentage = 200
      instance_warmup        = var.instance_warmup_seconds
      skip_matching          = true
      auto_rollback          = true

      alarm_specification {
        alarms = local.rollback_alarm_names
      }
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { "circa-role" = "voter" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

# ---------------------------------------------------------------- standbys

resource "aws_autoscaling_group" "standby" {
  name                      = local.roles.standby.asg_name
  vpc_zone_identifier       = aws_subnet.private[*].id
  min_size                  = var.standby_min_size
  max_size                  = var.standby_max_size
  target_group_arns         = [aws_lb_target_group.this.arn]
  health_check_type         = "ELB"
  health_check_grace_period = var.launch_timeout_seconds
  default_instance_warmup   = var.instance_warmup_seconds
  wait_for_capacity_timeout = "0"
  metrics_granularity       = "1Minute"
  enabled_metrics = [
    "GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances",
    "GroupTerminatingInstances", "WarmPoolWarmedCapacity", "WarmPoolPendingCapacity",
  ]

  launch_template {
    id      = aws_launch_template.node["standby"].id
    version = aws_launch_template.node["standby"].latest_version
  }

  # Stopped, already-installed instances: a scale-out skips the OS boot
  # work, package install and release download.
  dynamic "warm_pool" {
    for_each = var.warm_pool_min_size > 0 ? [var.warm_pool_min_size] : []
    content {
      pool_state                  = "Stopped"
      min_size                    = warm_pool.value
      max_group_prepared_capacity = var.standby_max_size

      # A scaled-in node removed itself from the Raft configuration; it
      # comes back fresh rather than with a stale data directory.
      instance_reuse_policy {
        reuse_on_scale_in = false
      }
    }
  }

  instance_maintenance_policy {
    min_healthy_percentage = 90
    max_healthy_percentage = 120
  }

  instance_refresh {
    strategy = "Rolling"

    preferences {
      min_healthy_percentage = 90
      max_healthy_percentage = 120
      instance_warmup        = var.instance_warmup_seconds
      checkpoint_percentages = [25, 100]
      checkpoint_delay       = 300
      skip_matching          = true
      auto_rollback          = true

      alarm_specification {
        alarms = local.rollback_alarm_names
      }
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { "circa-role" = "standby" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # Owned by the scaling policies once created.
    ignore_changes = [desired_capacity]
  }
}

# ---------------------------------------------------------------- lifecycle hooks

locals {
  group_names = {
    voter   = aws_autoscaling_group.voter.name
    standby = aws_autoscaling_group.standby.name
  }
}

# A launching node (new, or leaving the warm pool) stays in Pending:Wait
# until it answers 200 on /readyz (joined, snapshot streamed, caught up);
# only then does it enter the target group. A warm-pool instance completes
# this hook once it is installed, then stops.
resource "aws_autoscaling_lifecycle_hook" "launch" {
  for_each = local.group_names

  name                   = local.launch_hook_name
  autoscaling_group_name = each.value
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_LAUNCHING"
  heartbeat_timeout      = var.launch_timeout_seconds
  default_result         = "ABANDON"
}

# A terminating node (scale-in, instance refresh, rebalancing) stays in
# Terminating:Wait while the on-instance watcher runs `circa drain`: /readyz
# turns 503, the ALB deregisters it and lets in-flight requests finish
# (deregistration delay), leadership and the flusher hand off, the node
# leaves the Raft configuration and exits. The timeout must therefore
# exceed the deregistration delay (checked by tools/tfcheck and by the
# validation of var.drain_timeout_seconds). CONTINUE on timeout: the
# instance goes anyway; a node that vanished undrained is what Raft already
# tolerates.
resource "aws_autoscaling_lifecycle_hook" "drain" {
  for_each = local.group_names

  name                   = local.terminate_hook_name
  autoscaling_group_name = each.value
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = var.drain_timeout_seconds
  default_result         = "CONTINUE"
}
