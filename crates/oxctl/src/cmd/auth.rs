//! auth enable | disable, user add | delete | get | list | passwd | grant-role | revoke-role,
//! role add | delete | get | list | grant-permission | revoke-permission.

use std::fmt::Write as _;
use std::future::Future;

use oxcd_api::authpb::{self, permission::Type as PermType};
use oxcd_api::etcdserverpb as pb;

use super::{emit, prefix_end};
use oxcd_gocompat::quote::quote;

use crate::ctx::Ctx;
use crate::error::{CtlError, CtlResult, EXIT_BAD_ARGS, EXIT_ERROR};
use crate::json::{self, Obj};
use crate::print::{fields_header, unsupported, Format};

#[derive(clap::Subcommand, Debug)]
pub enum AuthCmd {
    /// Enables authentication
    Enable,
    /// Disables authentication
    Disable,
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCmd {
    /// Adds a new user
    Add {
        /// Read password from stdin instead of interactive terminal
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = true)]
        interactive: bool,
        /// Supply password from the command line flag
        #[arg(long, default_value = "")]
        new_user_password: String,
        args: Vec<String>,
    },
    /// Deletes a user
    Delete { args: Vec<String> },
    /// Gets detailed information of a user
    Get {
        /// Show permissions of roles granted to the user
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
        detail: bool,
        args: Vec<String>,
    },
    /// Lists all users
    List,
    /// Changes password of user
    Passwd {
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = true)]
        interactive: bool,
        args: Vec<String>,
    },
    /// Grants a role to a user
    GrantRole { args: Vec<String> },
    /// Revokes a role from a user
    RevokeRole { args: Vec<String> },
}

#[derive(clap::Subcommand, Debug)]
pub enum RoleCmd {
    /// Adds a new role
    Add { args: Vec<String> },
    /// Deletes a role
    Delete { args: Vec<String> },
    /// Gets detailed information of a role
    Get { args: Vec<String> },
    /// Lists all roles
    List,
    /// Grants a key to a role
    GrantPermission {
        #[command(flatten)]
        range: RangeFlags,
        args: Vec<String>,
    },
    /// Revokes a key from a role
    RevokePermission {
        #[command(flatten)]
        range: RangeFlags,
        args: Vec<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct RangeFlags {
    /// grant a prefix permission
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    prefix: bool,
    /// grant a permission of keys that are greater than or equal to the given key using byte compare
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value_t = false)]
    from_key: bool,
}

/// The responses of auth changes: a header and nothing else.
trait HeaderOnly {
    fn header(&self) -> &Option<pb::ResponseHeader>;
}

macro_rules! header_only {
    ($($response:ty),*) => {
        $(impl HeaderOnly for $response {
            fn header(&self) -> &Option<pb::ResponseHeader> {
                &self.header
            }
        })*
    };
}

header_only!(
    pb::AuthUserAddResponse,
    pb::AuthUserDeleteResponse,
    pb::AuthUserChangePasswordResponse,
    pb::AuthUserGrantRoleResponse,
    pb::AuthUserRevokeRoleResponse,
    pb::AuthRoleAddResponse,
    pb::AuthRoleDeleteResponse,
    pb::AuthRoleGrantPermissionResponse,
    pb::AuthRoleRevokePermissionResponse
);

/// Makes one auth change and prints etcdctl's sentence `done`, or the header in the other
/// formats.
async fn change<T: HeaderOnly>(
    ctx: &Ctx,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    done: String,
) -> CtlResult {
    let r = ctx.call(call).await?;
    header_out(ctx, r.header(), done)
}

/// Prints a response that carries only a header: `simple` text, or its json/fields form.
fn header_out(ctx: &Ctx, h: &Option<pb::ResponseHeader>, simple: String) -> CtlResult {
    match ctx.printer.format {
        Format::Simple => emit(simple.as_bytes()),
        Format::Json => emit((json::header_only(h) + "\n").as_bytes()),
        Format::Fields => emit(fields_header(h).as_bytes()),
        Format::Protobuf => emit(&prost::Message::encode_to_vec(&pb::AuthUserAddResponse {
            header: *h,
        })),
        Format::Table => Err(unsupported(Format::Table)),
    }
}

pub async fn auth(ctx: &Ctx, c: AuthCmd) -> CtlResult {
    let client = ctx.client().await?;
    match c {
        AuthCmd::Enable => {
            let mut auth = client.auth();
            loop {
                match auth.auth_enable(pb::AuthEnableRequest {}).await {
                    Ok(_) => break,
                    Err(s) if s.message() == "etcdserver: root user does not have root role" => {
                        // As etcdctl: make the root role, give it to root, and try again.
                        ctx.warn_unary(&s);
                        ctx.call(auth.role_add(pb::AuthRoleAddRequest {
                            name: "root".into(),
                        }))
                        .await?;
                        let grant = pb::AuthUserGrantRoleRequest {
                            user: "root".into(),
                            role: "root".into(),
                        };
                        ctx.call(auth.user_grant_role(grant)).await?;
                    }
                    Err(s) => {
                        ctx.warn_unary(&s);
                        return Err(CtlError::new(EXIT_ERROR, crate::error::status_message(&s)));
                    }
                }
            }
            emit(b"Authentication Enabled\n")
        }
        AuthCmd::Disable => {
            ctx.call(client.auth().auth_disable(pb::AuthDisableRequest {}))
                .await?;
            emit(b"Authentication Disabled\n")
        }
    }
}

fn one_arg<'a>(args: &'a [String], msg: &str) -> CtlResult<&'a str> {
    match args {
        [a] => Ok(a),
        _ => Err(CtlError::args(msg)),
    }
}

fn read_password_line(prompt: &str, interactive: bool) -> CtlResult<String> {
    if interactive {
        eprint!("{prompt}");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CtlError::new(EXIT_ERROR, e.to_string()))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn user(ctx: &Ctx, c: UserCmd) -> CtlResult {
    match c {
        UserCmd::Add {
            interactive,
            new_user_password,
            args,
        } => user_add(ctx, &args, new_user_password, interactive).await,
        UserCmd::Delete { args } => {
            let name = one_arg(
                &args,
                "user delete command requires user name as its argument",
            )?;
            let req = pb::AuthUserDeleteRequest { name: name.into() };
            let client = ctx.client().await?;
            change(
                ctx,
                client.auth().user_delete(req),
                format!("User {name} deleted\n"),
            )
            .await
        }
        UserCmd::Get { detail, args } => user_get(ctx, &args, detail).await,
        UserCmd::List => {
            let client = ctx.client().await?;
            let req = pb::AuthUserListRequest {};
            let r = ctx.call(client.auth().user_list(req)).await?;
            if ctx.printer.format == Format::Fields {
                return Err(unsupported(Format::Fields));
            }
            names_out(ctx, &r, &r.header, ["users", "Users"], &r.users)
        }
        UserCmd::Passwd { interactive, args } => {
            let name = one_arg(
                &args,
                "user passwd command requires user name as its argument",
            )?;
            let password = read_password_line(&format!("Password of {name}: "), interactive)?;
            let req = pb::AuthUserChangePasswordRequest {
                name: name.into(),
                password,
                ..Default::default()
            };
            let client = ctx.client().await?;
            let mut auth = client.auth();
            change(
                ctx,
                auth.user_change_password(req),
                "Password updated\n".into(),
            )
            .await
        }
        UserCmd::GrantRole { args } => {
            let msg = "user grant command requires user name and role name as its argument";
            let [user, role] = two(&args, msg)?;
            let done = format!("Role {role} is granted to user {user}\n");
            let req = pb::AuthUserGrantRoleRequest { user, role };
            let client = ctx.client().await?;
            change(ctx, client.auth().user_grant_role(req), done).await
        }
        UserCmd::RevokeRole { args } => {
            let msg = "user revoke-role requires user name and role name as its argument";
            let [name, role] = two(&args, msg)?;
            let done = format!("Role {role} is revoked from user {name}\n");
            let req = pb::AuthUserRevokeRoleRequest { name, role };
            let client = ctx.client().await?;
            change(ctx, client.auth().user_revoke_role(req), done).await
        }
    }
}

/// `user add NAME[:PASSWORD]`, the password from `--new-user-password`, the argument or stdin.
async fn user_add(
    ctx: &Ctx,
    args: &[String],
    new_user_password: String,
    interactive: bool,
) -> CtlResult {
    let arg = one_arg(args, "user add command requires user name as its argument")?;
    let (name, password) = if !new_user_password.is_empty() {
        (arg, new_user_password)
    } else if let Some((u, p)) = arg.split_once(':') {
        if u.is_empty() {
            return Err(CtlError::args("empty user name is not allowed"));
        }
        (u, p.to_string())
    } else {
        let prompt = format!("Password of {arg}: ");
        (arg, read_password_line(&prompt, interactive)?)
    };
    let req = pb::AuthUserAddRequest {
        name: name.into(),
        password,
        ..Default::default()
    };
    let client = ctx.client().await?;
    change(
        ctx,
        client.auth().user_add(req),
        format!("User {name} created\n"),
    )
    .await
}

fn two(args: &[String], msg: &str) -> CtlResult<[String; 2]> {
    match args {
        [a, b] => Ok([a.clone(), b.clone()]),
        _ => Err(CtlError::args(msg)),
    }
}

async fn user_get(ctx: &Ctx, args: &[String], detail: bool) -> CtlResult {
    let name = one_arg(args, "user get command requires user name as its argument")?;
    let client = ctx.client().await?;
    let req = pb::AuthUserGetRequest { name: name.into() };
    let r = ctx.call(client.auth().user_get(req)).await?;
    if detail && ctx.printer.format == Format::Simple {
        let mut out = format!("User: {name}\n");
        for role in &r.roles {
            let req = pb::AuthRoleGetRequest { role: role.clone() };
            let rr = ctx.call(client.auth().role_get(req)).await?;
            out += "\n";
            out += &role_get_simple(role, &rr.perm);
        }
        return emit(out.as_bytes());
    }
    if ctx.printer.format == Format::Protobuf {
        return emit(&prost::Message::encode_to_vec(&r));
    }
    match ctx.printer.format {
        Format::Simple => {
            let roles: String = r.roles.iter().map(|x| format!(" {x}")).collect();
            emit(format!("User: {name}\nRoles:{roles}\n").as_bytes())
        }
        Format::Json => emit(
            (Obj::new()
                .opt("header", json::header(&r.header))
                .list("roles", json::strings(&r.roles))
                .done()
                + "\n")
                .as_bytes(),
        ),
        _ => Err(unsupported(Format::Fields)),
    }
}

/// A list of user or role names; `[json_name, fields_name]` name the list in those formats.
fn names_out(
    ctx: &Ctx,
    r: &impl prost::Message,
    h: &Option<pb::ResponseHeader>,
    [json_name, fields_name]: [&str; 2],
    names: &[String],
) -> CtlResult {
    match ctx.printer.format {
        Format::Protobuf => emit(&r.encode_to_vec()),
        Format::Simple => emit(
            names
                .iter()
                .map(|n| format!("{n}\n"))
                .collect::<String>()
                .as_bytes(),
        ),
        Format::Json => emit(
            (Obj::new()
                .opt("header", json::header(h))
                .list(json_name, json::strings(names))
                .done()
                + "\n")
                .as_bytes(),
        ),
        Format::Fields => {
            let mut s = fields_header(h);
            let _ = write!(s, "\"{fields_name}\" :");
            for n in names {
                let _ = write!(s, " {}", quote(n.as_bytes()));
            }
            s.push('\n');
            emit(s.as_bytes())
        }
        _ => Err(unsupported(Format::Table)),
    }
}

/// `[key, end)`, `[key, <open ended>` and the `(prefix key)` note, as etcdctl prints ranges.
fn print_range(p: &authpb::Permission) -> String {
    let key = String::from_utf8_lossy(&p.key);
    let end = String::from_utf8_lossy(&p.range_end);
    let mut s = if p.range_end != [0] {
        format!("\t[{key}, {end})")
    } else {
        format!("\t[{key}, <open ended>")
    };
    if prefix_end(&p.key) == p.range_end {
        let _ = write!(s, " (prefix {key})");
    }
    s + "\n"
}

fn role_get_simple(role: &str, perms: &[authpb::Permission]) -> String {
    let mut out = format!("Role {role}\nKV Read:\n");
    let line = |p: &authpb::Permission| {
        if p.range_end.is_empty() {
            format!("\t{}\n", String::from_utf8_lossy(&p.key))
        } else {
            print_range(p)
        }
    };
    for p in perms.iter().filter(|p| {
        p.perm_type == PermType::Read as i32 || p.perm_type == PermType::Readwrite as i32
    }) {
        out += &line(p);
    }
    out += "KV Write:\n";
    for p in perms.iter().filter(|p| {
        p.perm_type == PermType::Write as i32 || p.perm_type == PermType::Readwrite as i32
    }) {
        out += &line(p);
    }
    out
}

fn perm_range(args: &[String], at: usize, f: &RangeFlags) -> CtlResult<(Vec<u8>, Vec<u8>)> {
    let key = args[at].clone().into_bytes();
    let mut end = args
        .get(at + 1)
        .map(|e| e.clone().into_bytes())
        .unwrap_or_default();
    if f.prefix && f.from_key {
        return Err(CtlError::args(
            "--from-key and --prefix flags are mutually exclusive",
        ));
    }
    if (f.prefix || f.from_key) && args.len() > at + 1 {
        return Err(CtlError::args(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        ));
    }
    if f.prefix {
        end = if key.is_empty() {
            vec![0]
        } else {
            prefix_end(&key)
        };
    }
    if f.from_key {
        end = vec![0];
    }
    Ok((key, end))
}

pub async fn role(ctx: &Ctx, c: RoleCmd) -> CtlResult {
    match c {
        RoleCmd::Add { args } => {
            let name = one_arg(&args, "role add command requires role name as its argument")?;
            let req = pb::AuthRoleAddRequest { name: name.into() };
            let client = ctx.client().await?;
            change(
                ctx,
                client.auth().role_add(req),
                format!("Role {name} created\n"),
            )
            .await
        }
        RoleCmd::Delete { args } => {
            let role = one_arg(
                &args,
                "role delete command requires role name as its argument",
            )?;
            let req = pb::AuthRoleDeleteRequest { role: role.into() };
            let client = ctx.client().await?;
            change(
                ctx,
                client.auth().role_delete(req),
                format!("Role {role} deleted\n"),
            )
            .await
        }
        RoleCmd::Get { args } => role_get(ctx, &args).await,
        RoleCmd::List => {
            let client = ctx.client().await?;
            let req = pb::AuthRoleListRequest {};
            let r = ctx.call(client.auth().role_list(req)).await?;
            names_out(ctx, &r, &r.header, ["roles", "Roles"], &r.roles)
        }
        RoleCmd::GrantPermission { range, args } => role_grant(ctx, &args, &range).await,
        RoleCmd::RevokePermission { range, args } => role_revoke(ctx, &args, &range).await,
    }
}

async fn role_get(ctx: &Ctx, args: &[String]) -> CtlResult {
    let role = one_arg(args, "role get command requires role name as its argument")?;
    let client = ctx.client().await?;
    let req = pb::AuthRoleGetRequest { role: role.into() };
    let r = ctx.call(client.auth().role_get(req)).await?;
    match ctx.printer.format {
        Format::Protobuf => emit(&prost::Message::encode_to_vec(&r)),
        Format::Simple => emit(role_get_simple(role, &r.perm).as_bytes()),
        Format::Json => {
            let perm = |p: &authpb::Permission| {
                Obj::new()
                    .num("permType", p.perm_type)
                    .bytes("key", &p.key)
                    .bytes("range_end", &p.range_end)
                    .done()
            };
            let body = Obj::new()
                .opt("header", json::header(&r.header))
                .list("perm", r.perm.iter().map(perm).collect());
            emit((body.done() + "\n").as_bytes())
        }
        Format::Fields => {
            let mut s = fields_header(&r.header);
            for p in &r.perm {
                let t = PermType::try_from(p.perm_type)
                    .map(|t| t.as_str_name())
                    .unwrap_or("READ");
                let _ = write!(
                    s,
                    "\"PermType\" :  {t}\n\"Key\" : {}\n\"RangeEnd\" : {}\n",
                    quote(&p.key),
                    quote(&p.range_end)
                );
            }
            emit(s.as_bytes())
        }
        Format::Table => Err(unsupported(Format::Table)),
    }
}

async fn role_revoke(ctx: &Ctx, args: &[String], range: &RangeFlags) -> CtlResult {
    if args.len() < 2 {
        return Err(CtlError::new(
            EXIT_BAD_ARGS,
            "role revoke-permission command requires role name and key [endkey] as its argument",
        ));
    }
    let (key, range_end) = perm_range(args, 1, range)?;
    let client = ctx.client().await?;
    let req = pb::AuthRoleRevokePermissionRequest {
        role: args[0].clone(),
        key: key.clone(),
        range_end: range_end.clone(),
    };
    let (k, e) = (
        String::from_utf8_lossy(&key),
        String::from_utf8_lossy(&range_end),
    );
    let simple = if range_end.is_empty() {
        format!("Permission of key {k} is revoked from role {}\n", args[0])
    } else if range_end != [0] {
        format!(
            "Permission of range [{k}, {e}) is revoked from role {}\n",
            args[0]
        )
    } else {
        format!(
            "Permission of range [{k}, <open ended> is revoked from role {}\n",
            args[0]
        )
    };
    change(ctx, client.auth().role_revoke_permission(req), simple).await
}

async fn role_grant(ctx: &Ctx, args: &[String], range: &RangeFlags) -> CtlResult {
    if args.len() < 3 {
        return Err(CtlError::args("role grant command requires role name, permission type, and key [endkey] as its argument"));
    }
    let perm_type = match args[1].to_uppercase().as_str() {
        "READ" => PermType::Read,
        "WRITE" => PermType::Write,
        "READWRITE" => PermType::Readwrite,
        _ => {
            return Err(CtlError::args(format!(
                "invalid permission type: {}",
                args[1]
            )))
        }
    };
    let (key, range_end) = perm_range(args, 2, range)?;
    let client = ctx.client().await?;
    let perm = authpb::Permission {
        perm_type: perm_type as i32,
        key,
        range_end,
    };
    let req = pb::AuthRoleGrantPermissionRequest {
        name: args[0].clone(),
        perm: Some(perm),
    };
    let done = format!("Role {} updated\n", args[0]);
    change(ctx, client.auth().role_grant_permission(req), done).await
}
