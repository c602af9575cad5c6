"""Hand-written pg_dump files for tests: a synthetic dump builder and a Supabase-shaped full-database dump.

The Supabase dump follows ../shared/reference/pg-restore.md section 2b: what pg_dump 17.6 with `--no-owner
--no-privileges --clean --if-exists` writes for a Supabase database (its own schemas and extensions, a config table
of an extension, policies naming Supabase's roles, an event trigger, the realtime publication), shortened to a few
objects of each kind. Real pg_dump output for everything else is made by pg_dump inside the test fixtures.
"""
from __future__ import annotations

KEY = "k7Qm2ZrT9xVb4NcLw8YpHs3DfGj6AeUo1iKq5tRzXyBn0MvCl2WuEa9SdFgHhJk"   # 63 characters, as pg_dump makes them

PRELUDE = """SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

"""


def header(version: str = "17.6", server: str | None = None, restrict: bool = True, key: str = KEY) -> str:
    text = "--\n-- PostgreSQL database dump\n--\n\n"
    if restrict:
        text += f"\\restrict {key}\n\n"
    return text + f"-- Dumped from database version {server or version}\n-- Dumped by pg_dump version {version}\n\n"


def footer(restrict: bool = True, key: str = KEY) -> str:
    return "--\n-- PostgreSQL database dump complete\n--\n\n" + (f"\\unrestrict {key}\n\n" if restrict else "")


def entry(name: str, type_: str, sql: str, schema: str = "public") -> str:
    return f"--\n-- Name: {name}; Type: {type_}; Schema: {schema}; Owner: -\n--\n\n{sql}\n\n\n"


def data(table: str, columns: str, rows: list[str], schema: str = "public", copy_name: str | None = None) -> str:
    name = copy_name or f"{schema}.{table}"
    body = "".join(row + "\n" for row in rows)
    return (f"--\n-- Data for Name: {table.strip(chr(34))}; Type: TABLE DATA; Schema: {schema}; Owner: -\n--\n\n"
            f"COPY {name} ({columns}) FROM stdin;\n{body}\\.\n\n\n")


def dump(*parts: str, version: str = "17.6", server: str | None = None, restrict: bool = True,
         with_footer: bool = True, prelude: str = PRELUDE) -> bytes:
    """A complete plain dump around the given parts."""
    text = header(version, server, restrict) + prelude + "".join(parts)
    if with_footer:
        text += footer(restrict)
    return text.encode()


def copy_escape(value: str | None) -> str:
    """A value in COPY text format, as pg_dump writes it."""
    if value is None:
        return "\\N"
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r"))


# -- a Supabase-shaped full dump ---------------------------------------------------------------------------------------
SUPABASE_SCHEMAS = ["auth", "extensions", "graphql", "graphql_public", "realtime", "storage", "vault"]
SUPABASE_EXTENSIONS = {"pg_graphql": "graphql", "pg_net": "extensions", "pg_stat_statements": "extensions",
                       "pgcrypto": "extensions", "supabase_vault": "vault", "uuid-ossp": "extensions"}
SUPABASE_ROWS = {"auth.users": 3, "storage.buckets": 2, "storage.objects": 2, "public.Transaction": 4,
                 "public.messages": 3, "public.profiles": 3, "vault.secrets": 1}
SUPABASE_ROLES = ["anon", "authenticated", "service_role"]

_CLEAN = """DROP EVENT TRIGGER IF EXISTS issue_pg_net_access;
DROP PUBLICATION IF EXISTS supabase_realtime;
DROP POLICY IF EXISTS "Users read own profile" ON public.profiles;
DROP POLICY IF EXISTS "Anyone reads messages" ON public.messages;
DROP POLICY IF EXISTS "Service role manages transactions" ON public."Transaction";
ALTER TABLE IF EXISTS ONLY storage.objects DROP CONSTRAINT IF EXISTS objects_bucket_id_fkey;
ALTER TABLE IF EXISTS ONLY public.profiles DROP CONSTRAINT IF EXISTS profiles_id_fkey;
ALTER TABLE IF EXISTS ONLY storage.objects DROP CONSTRAINT IF EXISTS objects_pkey;
ALTER TABLE IF EXISTS ONLY storage.buckets DROP CONSTRAINT IF EXISTS buckets_pkey;
ALTER TABLE IF EXISTS ONLY public.profiles DROP CONSTRAINT IF EXISTS profiles_pkey;
ALTER TABLE IF EXISTS ONLY public.messages DROP CONSTRAINT IF EXISTS messages_pkey;
ALTER TABLE IF EXISTS ONLY public."Transaction" DROP CONSTRAINT IF EXISTS "Transaction_pkey";
ALTER TABLE IF EXISTS ONLY auth.users DROP CONSTRAINT IF EXISTS users_pkey;
DROP TABLE IF EXISTS storage.objects;
DROP TABLE IF EXISTS storage.buckets;
DROP TABLE IF EXISTS public.profiles;
DROP TABLE IF EXISTS public.messages;
DROP TABLE IF EXISTS public."Transaction";
DROP TABLE IF EXISTS auth.users;
DROP FUNCTION IF EXISTS extensions.grant_pg_net_access();
DROP FUNCTION IF EXISTS auth.uid();
DROP EXTENSION IF EXISTS "uuid-ossp";
DROP EXTENSION IF EXISTS supabase_vault;
DROP EXTENSION IF EXISTS pgcrypto;
DROP EXTENSION IF EXISTS pg_stat_statements;
DROP EXTENSION IF EXISTS pg_net;
DROP EXTENSION IF EXISTS pg_graphql;
DROP SCHEMA IF EXISTS vault;
DROP SCHEMA IF EXISTS storage;
DROP SCHEMA IF EXISTS realtime;
DROP SCHEMA IF EXISTS graphql_public;
DROP SCHEMA IF EXISTS graphql;
DROP SCHEMA IF EXISTS extensions;
DROP SCHEMA IF EXISTS auth;
"""

_EXTENSION_COMMENTS = {
    "pg_graphql": "pg_graphql: GraphQL support", "pg_net": "Async HTTP",
    "pg_stat_statements": "track planning and execution statistics of all SQL statements executed",
    "pgcrypto": "cryptographic functions", "supabase_vault": "Supabase Vault Extension",
    "uuid-ossp": "generate universally unique identifiers (UUIDs)",
}

_GRANT_PG_NET = """CREATE FUNCTION extensions.grant_pg_net_access() RETURNS event_trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
  IF EXISTS (
    SELECT 1
    FROM pg_event_trigger_ddl_commands() AS ev
    JOIN pg_extension AS ext ON ev.objid = ext.oid
    WHERE ext.extname = 'pg_net'
  )
  THEN
    -- a comment with a backslash \\! inside a function body is data
    GRANT USAGE ON SCHEMA net TO supabase_functions_admin, postgres, anon, authenticated, service_role;
  END IF;
END;
$$;"""


def supabase_dump(key: str = KEY) -> bytes:
    """A pg_dump 17.6 --clean --if-exists --no-owner --no-privileges dump shaped like a Supabase database."""
    def ident(name: str) -> str:
        return f'"{name}"' if "-" in name else name

    parts = [_CLEAN, "SET default_tablespace = '';\n\nSET default_table_access_method = heap;\n\n"]
    schemas = "".join(entry(s, "SCHEMA", f"CREATE SCHEMA {s};", schema="-") for s in SUPABASE_SCHEMAS)
    extensions = "".join(
        entry(name, "EXTENSION", f"CREATE EXTENSION IF NOT EXISTS {ident(name)} WITH SCHEMA {schema};", schema="-")
        + entry(f"EXTENSION {name}", "COMMENT",
                f"COMMENT ON EXTENSION {ident(name)} IS '{_EXTENSION_COMMENTS[name]}';", schema="-")
        for name, schema in SUPABASE_EXTENSIONS.items())
    functions = (
        entry("uid()", "FUNCTION", "CREATE FUNCTION auth.uid() RETURNS uuid\n    LANGUAGE sql STABLE\n    AS $$\n"
              "  select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid\n$$;", schema="auth")
        + entry("grant_pg_net_access()", "FUNCTION", _GRANT_PG_NET, schema="extensions"))
    tables = (
        entry("users", "TABLE", "CREATE TABLE auth.users (\n    id uuid NOT NULL,\n    email character varying(255),\n"
              "    raw_user_meta_data jsonb,\n    created_at timestamp with time zone\n);", schema="auth")
        + entry("buckets", "TABLE", "CREATE TABLE storage.buckets (\n    id text NOT NULL,\n    name text NOT NULL,\n"
                "    public boolean DEFAULT false\n);", schema="storage")
        + entry("objects", "TABLE", "CREATE TABLE storage.objects (\n    id uuid DEFAULT extensions.uuid_generate_v4() "
                "NOT NULL,\n    bucket_id text,\n    name text,\n    metadata jsonb\n);", schema="storage")
        + entry("Transaction", "TABLE", 'CREATE TABLE public."Transaction" (\n    id bigint NOT NULL,\n'
                "    user_id uuid,\n    amount numeric(12,2),\n    error text,\n"
                "    created_at timestamp with time zone DEFAULT now()\n);")
        + entry("messages", "TABLE", "CREATE TABLE public.messages (\n    id bigint NOT NULL,\n    body text,\n"
                "    created_at timestamp with time zone DEFAULT now()\n);")
        + entry("profiles", "TABLE", "CREATE TABLE public.profiles (\n    id uuid NOT NULL,\n    username text,\n"
                "    avatar_url text\n);"))
    u1, u2, u3 = ("0b6c7f5e-1f0a-4c52-9d6e-3f1f2f6d0a01", "4f2a9c1e-7b3d-4e8f-a1c2-5d6e7f8a9b02",
                  "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c03")
    rows = (
        data("users", "id, email, raw_user_meta_data, created_at", [
            f'{u1}\tada@example.org\t{{"name": "Ada"}}\t2025-11-01 10:00:00+00',
            f"{u2}\tbob@example.org\t" + copy_escape('{"name": "Bob \\\\ the builder"}') + "\t2025-11-02 11:00:00+00",
            f"{u3}\t\\N\t\\N\t2025-11-03 12:00:00+00"], schema="auth")
        + data("buckets", "id, name, public", ["avatars\tavatars\tt", "receipts\treceipts\tf"], schema="storage")
        + data("objects", "id, bucket_id, name, metadata", [
            '11111111-2222-4333-8444-555555555555\tavatars\tada.png\t{"size": 1024}',
            "66666666-7777-4888-9999-000000000000\treceipts\tERROR report.pdf\t\\N"], schema="storage")
        + data('"Transaction"', "id, user_id, amount, error, created_at", [
            f"1\t{u1}\t10.00\t\\N\t2025-11-01 10:05:00+00",
            f"2\t{u1}\t-3.50\tERROR: card declined\t2025-11-01 10:06:00+00",
            f"3\t{u2}\t99.99\tFATAL: gateway timeout\\nretry later\t2025-11-02 11:05:00+00",
            f"4\t{u3}\t0.01\t\\\\! echo pwned\t2025-11-03 12:05:00+00"], copy_name='public."Transaction"')
        + data("messages", "id, body, created_at", [
            "1\thello\t2025-11-01 10:00:00+00",
            "2\t-- PostgreSQL database dump complete\t2025-11-01 10:01:00+00",
            "3\t\\\\.\t2025-11-01 10:02:00+00"])
        + data("profiles", "id, username, avatar_url", [
            f"{u1}\tada\thttps://example.org/a.png", f"{u2}\tbob\t\\N", f"{u3}\t\\N\t\\N"])
        + data("secrets", "id, name, secret", [
            "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee\tstripe_key\tc2VjcmV0"], schema="vault"))
    post = (
        entry("users users_pkey", "CONSTRAINT", "ALTER TABLE ONLY auth.users\n    ADD CONSTRAINT users_pkey PRIMARY "
              "KEY (id);", schema="auth")
        + entry('Transaction Transaction_pkey', "CONSTRAINT", 'ALTER TABLE ONLY public."Transaction"\n'
                '    ADD CONSTRAINT "Transaction_pkey" PRIMARY KEY (id);')
        + entry("messages messages_pkey", "CONSTRAINT", "ALTER TABLE ONLY public.messages\n    ADD CONSTRAINT "
                "messages_pkey PRIMARY KEY (id);")
        + entry("profiles profiles_pkey", "CONSTRAINT", "ALTER TABLE ONLY public.profiles\n    ADD CONSTRAINT "
                "profiles_pkey PRIMARY KEY (id);")
        + entry("buckets buckets_pkey", "CONSTRAINT", "ALTER TABLE ONLY storage.buckets\n    ADD CONSTRAINT "
                "buckets_pkey PRIMARY KEY (id);", schema="storage")
        + entry("objects objects_pkey", "CONSTRAINT", "ALTER TABLE ONLY storage.objects\n    ADD CONSTRAINT "
                "objects_pkey PRIMARY KEY (id);", schema="storage")
        + entry("profiles profiles_id_fkey", "FK CONSTRAINT", "ALTER TABLE ONLY public.profiles\n    ADD CONSTRAINT "
                "profiles_id_fkey FOREIGN KEY (id) REFERENCES auth.users(id) ON DELETE CASCADE;")
        + entry("objects objects_bucket_id_fkey", "FK CONSTRAINT", "ALTER TABLE ONLY storage.objects\n    ADD "
                'CONSTRAINT objects_bucket_id_fkey FOREIGN KEY (bucket_id) REFERENCES storage.buckets(id);',
                schema="storage")
        + entry('Transaction Service role manages transactions', "POLICY",
                'CREATE POLICY "Service role manages transactions" ON public."Transaction" TO service_role USING '
                "(true);")
        + entry("Transaction", "ROW SECURITY", 'ALTER TABLE public."Transaction" ENABLE ROW LEVEL SECURITY;')
        + entry("messages Anyone reads messages", "POLICY", 'CREATE POLICY "Anyone reads messages" ON public.messages '
                "FOR SELECT TO anon, authenticated USING (true);")
        + entry("messages", "ROW SECURITY", "ALTER TABLE public.messages ENABLE ROW LEVEL SECURITY;")
        + entry("profiles Users read own profile", "POLICY", 'CREATE POLICY "Users read own profile" ON '
                "public.profiles FOR SELECT TO authenticated USING ((auth.uid() = id));")
        + entry("profiles", "ROW SECURITY", "ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;")
        + entry("supabase_realtime", "PUBLICATION", "CREATE PUBLICATION supabase_realtime WITH (publish = 'insert, "
                "update, delete, truncate');", schema="-")
        + entry("supabase_realtime messages", "PUBLICATION TABLE", "ALTER PUBLICATION supabase_realtime ADD TABLE "
                "ONLY public.messages;")
        + entry("issue_pg_net_access", "EVENT TRIGGER", "CREATE EVENT TRIGGER issue_pg_net_access ON "
                "ddl_command_end\n         WHEN TAG IN ('CREATE EXTENSION')\n   EXECUTE FUNCTION "
                "extensions.grant_pg_net_access();", schema="-"))
    text = (header("17.6", restrict=True, key=key) + PRELUDE + "".join(parts) + schemas + extensions + functions
            + tables + rows + post + footer(restrict=True, key=key))
    return text.encode()
