# Everything slow here is keyed on what stays the same when a prebuild is claimed: the workspace's data
# directory (one per workspace id) and the immutable project. The owner, the workspace name and the mutable
# editor change at claim: only `terraform_data.profile`, cheap to replace, reads them, so the claim build
# (`claim_build = true` in prebuildd.toml) rewrites the profile and never the prepared directory.

terraform {
  required_version = ">= 1.4"
}

locals {
  running = var.prebuildd_transition == "start"
  home    = "${var.prebuildd_data_dir}/${var.project}"
  agent   = "${var.prebuildd_data_dir}/.agent"
}

# The slow part a pool exists for: prepare the workspace directory once.
resource "terraform_data" "home" {
  input = { home = local.home, agent = local.agent }

  provisioner "local-exec" {
    command     = "sh ${path.module}/scripts/prepare.sh"
    environment = { HOME_DIR = local.home, PROJECT = var.project, SETUP_SECONDS = var.setup_seconds }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "rm -rf '${self.input.home}' '${self.input.agent}'"
  }
}

# Who the workspace is for. Built for the prebuilds user first; the claim build re-applies as the new owner
# (with the editor the user chose), which replaces this resource and nothing else.
resource "terraform_data" "profile" {
  triggers_replace = [var.prebuildd_workspace_owner, var.prebuildd_workspace_name, var.editor]
  depends_on       = [terraform_data.home]

  provisioner "local-exec" {
    command = "sh ${path.module}/scripts/profile.sh"
    environment = {
      HOME_DIR  = local.home
      OWNER     = var.prebuildd_workspace_owner
      WORKSPACE = var.prebuildd_workspace_name
      EDITOR    = var.editor
    }
  }
}

# A new agent token comes with every start build, except a claim's: write it where the agent supervisor
# reads it, and restart the agent with it. An empty token (a claim build) leaves the running agent alone,
# so this resource is cheap to replace and nothing else depends on the token.
resource "terraform_data" "agent_token" {
  count            = local.running ? 1 : 0
  triggers_replace = [var.prebuildd_agent_token]
  depends_on       = [terraform_data.home]

  provisioner "local-exec" {
    command     = "sh ${path.module}/scripts/agent-token.sh"
    environment = { AGENT_DIR = local.agent, AGENT_TOKEN = var.prebuildd_agent_token }
  }
}

# The agent runs while the workspace is started: a stop applies with count = 0, which stops it.
resource "terraform_data" "agent" {
  count      = local.running ? 1 : 0
  input      = { agent = local.agent }
  depends_on = [terraform_data.agent_token]

  provisioner "local-exec" {
    command = "sh ${path.module}/scripts/agent-start.sh"
    environment = {
      AGENT_DIR            = local.agent
      HOME_DIR             = local.home
      AGENT_COMMAND        = var.agent_command
      PREBUILDD_ACCESS_URL = var.prebuildd_access_url
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "sh ${path.module}/scripts/agent-stop.sh '${self.input.agent}'"
  }
}

output "directory" {
  value = local.home
}

output "owner" {
  value = var.prebuildd_workspace_owner
}

output "editor" {
  value = var.editor
}

output "agent_log" {
  value = "${local.agent}/agent.log"
}
