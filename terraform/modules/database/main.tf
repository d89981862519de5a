# Aurora PostgreSQL global database: circa's system of record for reporting,
# audits and disaster recovery (write-behind from the Raft leader's flusher,
# planned in issue 3; `circa restore --from-postgres` seeds a new cluster
# from it). One module call per region: the primary creates the global
# cluster and the writer, each secondary adds a read-only cluster with
# storage-level replication (typically < 1 s), promotable if the primary
# region is lost (terraform/README.md).

locals {
  primary    = var.role == "primary"
  identifier = "${var.name}-${var.region}"
  tags       = merge(var.tags, { "circa-cluster" = var.name, "circa-region" = var.region })
}

resource "aws_rds_global_cluster" "this" {
  count = local.primary ? 1 : 0

  global_cluster_identifier = var.global_cluster_identifier
  engine                    = "aurora-postgresql"
  engine_version            = var.engine_version
  database_name             = "circa"
  storage_encrypted         = true
  deletion_protection       = var.deletion_protection
}

resource "aws_kms_key" "this" {
  description             = "Aurora storage encryption for ${local.identifier}"
  deletion_window_in_days = 30
  enable_key_rotation     = true
  tags                    = local.tags
}

resource "aws_db_subnet_group" "this" {
  name       = local.identifier
  subnet_ids = var.subnet_ids
  tags       = local.tags
}

resource "aws_security_group" "this" {
  name        = "${local.identifier}-pg"
  description = "Aurora PostgreSQL for circa"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "pg" {
  for_each = toset(var.allowed_cidr_blocks)

  security_group_id = aws_security_group.this.id
  description       = "PostgreSQL from circa nodes"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
  cidr_ipv4         = each.value
}

# The master password is read at apply time and passed as a write-only
# argument: it never enters the plan or the state.
ephemeral "aws_secretsmanager_secret_version" "master" {
  count = local.primary ? 1 : 0

  secret_id = var.master_password_secret_arn
}

resource "aws_rds_cluster" "this" {
  cluster_identifier        = local.identifier
  engine                    = "aurora-postgresql"
  engine_version            = var.engine_version
  global_cluster_identifier = local.primary ? aws_rds_global_cluster.this[0].id : var.global_cluster_identifier
  db_subnet_group_name      = aws_db_subnet_group.this.name
  vpc_security_group_ids    = [aws_security_group.this.id]
  storage_encrypted         = true
  kms_key_id                = aws_kms_key.this.arn

  master_username            = local.primary ? "circa_admin" : null
  master_password_wo         = local.primary ? ephemeral.aws_secretsmanager_secret_version.master[0].secret_string : null
  master_password_wo_version = local.primary ? var.master_password_version : null

  backup_retention_period         = var.backup_retention_days
  preferred_backup_window         = "02:00-03:00"
  copy_tags_to_snapshot           = true
  deletion_protection             = var.deletion_protection
  skip_final_snapshot             = false
  final_snapshot_identifier       = "${local.identifier}-final"
  enabled_cloudwatch_logs_exports = ["postgresql"]

  tags = local.tags

  lifecycle {
    precondition {
      condition     = !local.primary || var.master_password_secret_arn != null
      error_message = "The primary needs master_password_secret_arn."
    }

    # A managed switchover or failover moves the writer role between
    # regions; the runbook then swaps the roles in the configuration.
    ignore_changes = [replication_source_identifier]
  }
}

resource "aws_rds_cluster_instance" "this" {
  count = var.instance_count

  identifier                   = "${local.identifier}-${count.index + 1}"
  cluster_identifier           = aws_rds_cluster.this.id
  engine                       = aws_rds_cluster.this.engine
  engine_version               = aws_rds_cluster.this.engine_version
  instance_class               = var.instance_class
  db_subnet_group_name         = aws_db_subnet_group.this.name
  performance_insights_enabled = true
  auto_minor_version_upgrade   = false
  tags                         = local.tags
}

resource "aws_cloudwatch_metric_alarm" "global_replication_lag" {
  count = local.primary ? 0 : 1

  alarm_name          = "${local.identifier}-aurora-global-lag"
  alarm_description   = "Aurora global replication to ${var.region} more than ${var.replication_lag_threshold_ms} ms behind for 5 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "AuroraGlobalDBReplicationLag"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.replication_lag_threshold_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "missing"
  dimensions          = { DBClusterIdentifier = aws_rds_cluster.this.cluster_identifier }
  alarm_actions       = var.alarm_topic_arns
  ok_actions          = var.alarm_topic_arns
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "cpu" {
  alarm_name          = "${local.identifier}-aurora-cpu"
  alarm_description   = "Aurora CPU in ${var.region} above 80% for 10 minutes."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  threshold           = 80
  comparison_operator = "GreaterThanThreshold"
  dimensions          = { DBClusterIdentifier = aws_rds_cluster.this.cluster_identifier }
  alarm_actions       = var.alarm_topic_arns
  ok_actions          = var.alarm_topic_arns
  tags                = local.tags
}
