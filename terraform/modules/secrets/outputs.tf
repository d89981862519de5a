output "secret_names" {
  description = "Names of the secrets nodes read (the same name in every region)."
  value = {
    jwt      = aws_secretsmanager_secret.this["jwt"].name
    peer_tls = aws_secretsmanager_secret.this["peer-tls"].name
    pg       = aws_secretsmanager_secret.this["pg"].name
  }
}

output "pg_master_secret_arn" {
  description = "ARN (primary region) of the Aurora master password secret."
  value       = aws_secretsmanager_secret.this["pg-master"].arn
}

output "secret_arns" {
  description = "ARNs of all secrets in the primary region."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}

output "read_policy_json" {
  description = "IAM policy document granting read access to every secret in every region."
  value       = data.aws_iam_policy_document.read.json
}
