# staging, state 1 of 3 (foundation -> regions -> edge): what every region needs
# before a node boots. Secrets replicated to every region, a release bucket
# and an alarm topic per region. Adding a region: add its provider, its
# entry in local.regions and its block of resources below.

locals {
  name           = "circa-staging"
  primary_region = "us-east-1"
  regions        = ["us-east-1", "eu-west-1"]

  tags = {
    project     = "circa"
    environment = "staging"
    managed-by  = "terraform"
  }
}

module "secrets" {
  source = "../../../modules/secrets"

  name            = local.name
  replica_regions = [for r in local.regions : r if r != local.primary_region]
  tags            = local.tags
}

# ---------------------------------------------------------------- us-east-1

resource "aws_s3_bucket" "releases_us_east_1" {
  bucket = "${local.name}-releases-us-east-1"
}

resource "aws_s3_bucket_versioning" "releases_us_east_1" {
  bucket = aws_s3_bucket.releases_us_east_1.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "releases_us_east_1" {
  bucket                  = aws_s3_bucket.releases_us_east_1.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_sns_topic" "alarms_us_east_1" {
  name = "${local.name}-alarms"
}

resource "aws_sns_topic_subscription" "alarms_us_east_1" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms_us_east_1.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# ---------------------------------------------------------------- eu-west-1

resource "aws_s3_bucket" "releases_eu_west_1" {
  provider = aws.eu_west_1
  bucket   = "${local.name}-releases-eu-west-1"
}

resource "aws_s3_bucket_versioning" "releases_eu_west_1" {
  provider = aws.eu_west_1
  bucket   = aws_s3_bucket.releases_eu_west_1.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "releases_eu_west_1" {
  provider                = aws.eu_west_1
  bucket                  = aws_s3_bucket.releases_eu_west_1.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_sns_topic" "alarms_eu_west_1" {
  provider = aws.eu_west_1
  name     = "${local.name}-alarms"
}

resource "aws_sns_topic_subscription" "alarms_eu_west_1" {
  provider = aws.eu_west_1
  count    = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms_eu_west_1.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}
