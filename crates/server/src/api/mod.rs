//! The API wing: what clients reach. gRPC services (etcd's v3 API), the HTTP listener with
//! the v2 keys API, `/version` and `/health`, and [`server::Server`], the facade handlers
//! use to propose writes and wait for read points.
//!
//! Rule: handlers are thin (check the request, check permissions, delegate, map the error
//! once). This wing imports `crate::state` (to read) and `crate::consensus` (to send events); no
//! other wing imports it.

pub mod auth_check;
pub mod auth_service;
pub mod body;
pub mod cluster_service;
pub mod coalesce;
pub mod conn_gate;
pub mod election_service;
pub mod gateway;
pub mod grpc_metrics;
pub mod h2_authority;
pub mod health;
pub mod http;
pub mod import_service;
pub mod kv_service;
pub mod kv_unary;
pub mod lease_service;
pub mod lock_service;
pub mod maintenance_service;
pub mod metrics_http;
pub mod recipes;
pub mod server;
pub mod services;
pub mod v2_admin;
pub mod v2_http;
pub mod watch_service;
