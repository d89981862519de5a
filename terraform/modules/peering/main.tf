# Inter-region VPC peering for Raft (nng over TLS, port 7000), the cluster
# API between nodes, and the flusher's PostgreSQL connection to the global
# writer endpoint. One call per pair of regions (a full mesh).

resource "aws_vpc_peering_connection" "this" {
  provider = aws.requester

  vpc_id      = var.requester.vpc_id
  peer_vpc_id = var.accepter.vpc_id
  peer_region = var.accepter.region
  auto_accept = false

  tags = merge(var.tags, { Name = "${var.name}-${var.requester.region}-${var.accepter.region}" })
}

resource "aws_vpc_peering_connection_accepter" "this" {
  provider = aws.accepter

  vpc_peering_connection_id = aws_vpc_peering_connection.this.id
  auto_accept               = true

  tags = merge(var.tags, { Name = "${var.name}-${var.requester.region}-${var.accepter.region}" })
}

resource "aws_route" "requester" {
  provider = aws.requester
  count    = length(var.requester.route_table_ids)

  route_table_id            = var.requester.route_table_ids[count.index]
  destination_cidr_block    = var.accepter.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.this.id

  depends_on = [aws_vpc_peering_connection_accepter.this]
}

resource "aws_route" "accepter" {
  provider = aws.accepter
  count    = length(var.accepter.route_table_ids)

  route_table_id            = var.accepter.route_table_ids[count.index]
  destination_cidr_block    = var.requester.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.this.id

  depends_on = [aws_vpc_peering_connection_accepter.this]
}
