output "global_cluster_identifier" {
  description = "The Aurora global cluster (secondaries join it; available once the primary has its instances)."
  value       = local.primary ? aws_rds_global_cluster.this[0].id : var.global_cluster_identifier
  depends_on  = [aws_rds_cluster_instance.this]
}

output "global_writer_endpoint" {
  description = "Global writer endpoint (follows the writer across switchovers); use it in the circa_app DSN. null on secondaries."
  value       = local.primary ? aws_rds_global_cluster.this[0].endpoint : null
}

output "cluster_identifier" {
  description = "This region's cluster."
  value       = aws_rds_cluster.this.cluster_identifier
}

output "cluster_arn" {
  description = "ARN of this region's cluster."
  value       = aws_rds_cluster.this.arn
}

output "writer_endpoint" {
  description = "This cluster's writer endpoint (only writable on the primary)."
  value       = aws_rds_cluster.this.endpoint
}

output "reader_endpoint" {
  description = "This cluster's reader endpoint (reports and audits can read here)."
  value       = aws_rds_cluster.this.reader_endpoint
}
