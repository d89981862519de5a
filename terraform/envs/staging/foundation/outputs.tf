output "name" {
  description = "Deployment name."
  value       = local.name
}

output "primary_region" {
  description = "Region of the secrets' primary copies and of the Aurora writer."
  value       = local.primary_region
}

output "secret_names" {
  description = "Secrets nodes read (same names in every region)."
  value       = module.secrets.secret_names
}

output "pg_master_secret_arn" {
  description = "Aurora master password secret (primary region)."
  value       = module.secrets.pg_master_secret_arn
}

output "release_buckets" {
  description = "Release bucket per region: CI uploads circa-<version>-debian12-amd64.tar.gz under releases/ in each."
  value = {
    "us-east-1" = aws_s3_bucket.releases_us_east_1.id
    "eu-west-1" = aws_s3_bucket.releases_eu_west_1.id
  }
}

output "alarm_topic_arns" {
  description = "Alarm topic per region (alarms notify a topic in their own region)."
  value = {
    "us-east-1" = aws_sns_topic.alarms_us_east_1.arn
    "eu-west-1" = aws_sns_topic.alarms_eu_west_1.arn
  }
}
