# One circa region: VPC, public ALB (health-checked on /readyz), a small stable
# group of Raft voters and an autoscaled group of standbys (non-voting
# learners that serve reads), both started by cloud-init with `circa serve
# --join`. compute.tf holds the launch template and groups, scaling.tf the
# policies, observability.tf logs and alarms.

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_availability_zones" "available" {
  state = "available"
}

locals {
  prefix    = "${var.name}-${var.region}"
  azs       = slice(data.aws_availability_zones.available.names, 0, var.az_count)
  http_port = 8080
  peer_port = 7000

  # /20 VPC (or larger): /24 public subnets in its first /22, /22 private
  # subnets in the other three.
  public_subnets  = [for i in range(var.az_count) : cidrsubnet(var.vpc_cidr, 4, i)]
  private_subnets = [for i in range(var.az_count) : cidrsubnet(var.vpc_cidr, 2, i + 1)]

  regional_fqdn = "${var.region}.${var.domain_name}"

  tags = merge(var.tags, {
    "circa-cluster" = var.name
    "circa-region"  = var.region
  })
}

# ---------------------------------------------------------------- network

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(local.tags, { Name = local.prefix })

  lifecycle {
    precondition {
      condition     = data.aws_region.current.region == var.region
      error_message = "var.region does not match the region of the aws provider given to this module."
    }
  }
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.prefix })
}

resource "aws_subnet" "public" {
  count = var.az_count

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = local.public_subnets[count.index]

  tags = merge(local.tags, { Name = "${local.prefix}-public-${local.azs[count.index]}" })
}

resource "aws_subnet" "private" {
  count = var.az_count

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = local.private_subnets[count.index]

  tags = merge(local.tags, { Name = "${local.prefix}-private-${local.azs[count.index]}" })
}

resource "aws_eip" "nat" {
  count  = var.az_count
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.prefix}-nat-${local.azs[count.index]}" })
}

# One NAT gateway per AZ: losing an AZ must not cut the others off from
# Secrets Manager, S3 and apt.
resource "aws_nat_gateway" "this" {
  count = var.az_count

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(local.tags, { Name = "${local.prefix}-${local.azs[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.prefix}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count          = var.az_count
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table" "private" {
  count  = var.az_count
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${local.prefix}-private-${local.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count                  = var.az_count
  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[count.index].id
}

resource "aws_route_table_association" "private" {
  count          = var.az_count
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# Release tarballs and apt traffic to S3 stay off the NAT gateways.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id
  tags              = merge(local.tags, { Name = "${local.prefix}-s3" })
}

# ---------------------------------------------------------------- security groups

resource "aws_security_group" "lb" {
  name        = "${local.prefix}-lb"
  description = "circa public load balancer"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_https" {
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS from anywhere"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "lb_http" {
  security_group_id = aws_security_group.lb.id
  description       = "HTTP from anywhere (redirected to HTTPS)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "lb_to_nodes" {
  security_group_id            = aws_security_group.lb.id
  description                  = "to circa nodes"
  ip_protocol                  = "tcp"
  from_port                    = local.http_port
  to_port                      = local.http_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_security_group" "node" {
  name        = "${local.prefix}-node"
  description = "circa nodes"
  vpc_id      = aws_vpc.this.id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "node_http" {
  security_group_id            = aws_security_group.node.id
  description                  = "HTTP API and /readyz from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.http_port
  to_port                      = local.http_port
  referenced_security_group_id = aws_security_group.lb.id
}

resource "aws_vpc_security_group_ingress_rule" "node_peer_local" {
  security_group_id            = aws_security_group.node.id
  description                  = "Raft (nng) from nodes in this region"
  ip_protocol                  = "tcp"
  from_port                    = local.peer_port
  to_port                      = local.peer_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_ingress_rule" "node_peer_remote" {
  for_each = toset(var.peer_cidrs)

  security_group_id = aws_security_group.node.id
  description       = "Raft (nng, TLS) from the other regions"
  ip_protocol       = "tcp"
  from_port         = local.peer_port
  to_port           = local.peer_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "node_api_remote" {
  for_each = toset(var.peer_cidrs)

  security_group_id = aws_security_group.node.id
  description       = "cluster API (/v1/cluster, drain, promote) from the other regions"
  ip_protocol       = "tcp"
  from_port         = local.http_port
  to_port           = local.http_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "node_all" {
  security_group_id = aws_security_group.node.id
  description       = "peers, PostgreSQL, AWS APIs, apt"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# ---------------------------------------------------------------- certificate and DNS

resource "aws_acm_certificate" "this" {
  domain_name               = var.domain_name
  subject_alternative_names = [local.regional_fqdn]
  validation_method         = "DNS"
  tags                      = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

# Every region validates the same names: the records are identical, hence
# allow_overwrite.
resource "aws_route53_record" "validation" {
  for_each = {
    for o in aws_acm_certificate.this.domain_validation_options : o.domain_name => o
  }

  zone_id         = var.zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "this" {
  certificate_arn         = aws_acm_certificate.this.arn
  validation_record_fqdns = [for r in aws_route53_record.validation : r.fqdn]
}

# <region>.<domain>: what the edge health check and operators address.
resource "aws_route53_record" "regional" {
  zone_id = var.zone_id
  name    = local.regional_fqdn
  type    = "A"

  alias {
    name                   = aws_lb.this.dns_name
    zone_id                = aws_lb.this.zone_id
    evaluate_target_health = true
  }
}

# ---------------------------------------------------------------- load balancer

resource "aws_s3_bucket" "lb_logs" {
  bucket_prefix = "${var.name}-lb-logs-"
  force_destroy = false
  tags          = local.tags
}

resource "aws_s3_bucket_lifecycle_configuration" "lb_logs" {
  bucket = aws_s3_bucket.lb_logs.id

  rule {
    id     = "expire"
    status = "Enabled"

    filter {}

    expiration {
      days = var.log_retention_days
    }
  }
}

# Regions opened before August 2022 deliver ALB logs as the regional ELB
# account, newer ones as the log delivery service: allow both.
data "aws_elb_service_account" "this" {}

data "aws_iam_policy_document" "lb_logs" {
  statement {
    sid       = "AlbAccessLogsElbAccount"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.lb_logs.arn}/alb/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]

    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.this.arn]
    }
  }

  statement {
    sid       = "AlbAccessLogsService"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.lb_logs.arn}/alb/AWSLogs/${data.aws_caller_identity.current.account_id}/*"]

    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }
}

resource "aws_s3_bucket_policy" "lb_logs" {
  bucket = aws_s3_bucket.lb_logs.id
  policy = data.aws_iam_policy_document.lb_logs.json
}

resource "aws_lb" "this" {
  name                       = substr("${var.name}-${replace(var.region, "-", "")}", 0, 32)
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = aws_subnet.public[*].id
  security_groups            = [aws_security_group.lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = 60

  access_logs {
    bucket  = aws_s3_bucket.lb_logs.id
    prefix  = "alb"
    enabled = true
  }

  # Reserved capacity: an ALB scales by itself, but not from ~1 req/s to
  # ~80k req/s within a minute. See README "Capacity".
  dynamic "minimum_load_balancer_capacity" {
    for_each = var.lb_reserved_capacity_units > 0 ? [var.lb_reserved_capacity_units] : []
    content {
      capacity_units = minimum_load_balancer_capacity.value
    }
  }

  tags = local.tags

  depends_on = [aws_s3_bucket_policy.lb_logs]
}

resource "aws_lb_target_group" "this" {
  name                          = substr("${var.name}-${replace(var.region, "-", "")}", 0, 32)
  vpc_id                        = aws_vpc.this.id
  port                          = local.http_port
  protocol                      = "HTTP"
  target_type                   = "instance"
  deregistration_delay          = var.deregistration_delay_seconds
  load_balancing_algorithm_type = "least_outstanding_requests"

  # /readyz answers 200 only when the node has caught up and is not
  # draining; 503 otherwise, so the ALB moves away from a draining node
  # before the instance is terminated.
  health_check {
    enabled             = true
    path                = "/readyz"
    protocol            = "HTTP"
    port                = "traffic-port"
    matcher             = "200"
    interval            = 5
    timeout             = 2
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = aws_acm_certificate_validation.this.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = local.tags
}

# Prometheus metrics and the cluster API are for the VPC only.
resource "aws_lb_listener_rule" "deny_internal" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10

  condition {
    path_pattern {
      values = ["/metrics", "/v1/cluster", "/v1/cluster/*"]
    }
  }

  action {
    type = "fixed-response"

    fixed_response {
      content_type = "application/problem+json"
      message_body = "{\"type\":\"/problems/not-found\",\"title\":\"Not Found\",\"status\":404}"
      status_code  = "404"
    }
  }

  tags = local.tags
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type = "redirect"

    redirect {
      port        = "443"
      protocol    = "HTTPS"
      status_code = "HTTP_301"
    }
  }

  tags = local.tags
}

# ---------------------------------------------------------------- WAF

# circa rate-limits anonymous callers by client address, and behind the ALB
# that address is the ALB's. Per-client limiting of anonymous traffic
# (register, login) happens here instead.
resource "aws_wafv2_web_acl" "this" {
  count = var.waf_requests_per_5min_per_ip > 0 ? 1 : 0

  name  = local.prefix
  scope = "REGIONAL"

  default_action {
    allow {}
  }

  rule {
    name     = "rate-per-ip"
    priority = 1

    action {
      block {}
    }

    statement {
      rate_based_statement {
        limit              = var.waf_requests_per_5min_per_ip
        aggregate_key_type = "IP"
      }
    }

    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${local.prefix}-rate-per-ip"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = local.prefix
    sampled_requests_enabled   = true
  }

  tags = local.tags
}

resource "aws_wafv2_web_acl_association" "this" {
  count = var.waf_requests_per_5min_per_ip > 0 ? 1 : 0

  resource_arn = aws_lb.this.arn
  web_acl_arn  = aws_wafv2_web_acl.this[0].arn
}
