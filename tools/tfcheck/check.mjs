#!/usr/bin/env node
// Offline checks of circa's terraform/ tree. No terraform binary is needed:
// every .tf and .tfvars file is parsed with HashiCorp's HCL parser (Go,
// compiled to WebAssembly, shipped in @cdktf/hcl2json), then:
//
//   parse            every .tf / .tfvars file parses
//   standard-files   the layout exists; every module has main.tf,
//                    variables.tf, outputs.tf, versions.tf
//   pinned-versions  versions.tf pins required_version and every provider
//                    (source + a constraint with an upper bound); every
//                    provider a module uses is declared there
//   variables        every variable has a type and a description; every
//                    reusable module validates at least one input
//   references       every var., local., module. (and module output),
//                    data., ephemeral., resource and provider alias
//                    reference is declared
//   module-args      module call arguments are variables of the child,
//                    required ones are set, provider aliases match the
//                    child's configuration_aliases
//   template-vars    templatefile() templates exist and every variable
//                    they use is passed
//   health-check     every load balancer / DNS health check probes /readyz
//   drain-timeout    a terminating lifecycle hook's timeout >= the target
//                    group's deregistration delay, evaluated for every
//                    module instance with the values its callers pass
//   no-secrets       no private keys, access keys, tokens or literal
//                    passwords anywhere in the tree
//
// Prints one line per result (PASS/FAIL <check> <subject>[: why]) and last
// "N passed, N failed"; exits 1 when anything failed, 2 on bad usage.
//
// Usage: node tools/tfcheck/check.mjs [terraform-dir]

import fs from 'node:fs';
import path from 'node:path';
import hcl from '@cdktf/hcl2json';

const ROOT = path.resolve(process.argv[2] || 'terraform');
if (!fs.existsSync(ROOT) || !fs.statSync(ROOT).isDirectory()) {
    console.error(`usage: check.mjs TERRAFORM_DIR (${ROOT} is not a directory)`);
    process.exit(2);
}

// ------------------------------------------------------------------ results

let passed = 0;
let failed = 0;
function result(check, subject, problems) {
    if (problems.length === 0) {
        passed++;
        console.log(`PASS ${check} ${subject}`);
    } else {
        failed++;
        console.log(`FAIL ${check} ${subject}: ${problems.join('; ')}`);
    }
}
const rel = (p) => path.relative(ROOT, p) || '.';

// ------------------------------------------------------------------ files

const SKIP_DIRS = new Set(['.terraform', 'node_modules', '.git']);
function walk(dir, out = []) {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) {
            if (!SKIP_DIRS.has(e.name)) walk(p, out);
        } else if (e.isFile()) {
            out.push(p);
        }
    }
    return out;
}
const allFiles = walk(ROOT).sort();
const tfFiles = allFiles.filter((f) => f.endsWith('.tf'));
const varFiles = allFiles.filter((f) => f.endsWith('.tfvars'));

// ------------------------------------------------------------------ parse

const parsed = new Map(); // file -> JSON
for (const f of [...tfFiles, ...varFiles]) {
    try {
        parsed.set(f, await hcl.parse(rel(f), fs.readFileSync(f, 'utf8')));
        result('parse', rel(f), []);
    } catch (e) {
        result('parse', rel(f), [String(e.message || e).replace(/\s+/g, ' ')]);
    }
}

// One record per directory holding .tf files (a Terraform module).
const modules = new Map();
for (const f of tfFiles) {
    const dir = path.dirname(f);
    if (!modules.has(dir)) {
        modules.set(dir, {
            dir, files: [], variables: {}, locals: {}, modules: {}, outputs: {},
            resources: {}, data: {}, ephemeral: {}, providers: [], terraform: [], tfvars: {},
            parsedOk: true,
        });
    }
    const m = modules.get(dir);
    m.files.push(f);
    const j = parsed.get(f);
    if (!j) { m.parsedOk = false; continue; }
    for (const [n, b] of Object.entries(j.variable || {})) m.variables[n] = { body: b[0], file: f };
    for (const blk of j.locals || []) for (const [n, v] of Object.entries(blk)) m.locals[n] = v;
    for (const [n, b] of Object.entries(j.module || {})) m.modules[n] = { body: b[0], file: f };
    for (const [n, b] of Object.entries(j.output || {})) m.outputs[n] = b[0];
    for (const kind of ['resource', 'data', 'ephemeral']) {
        const target = kind === 'resource' ? m.resources : m[kind];
        for (const [t, byName] of Object.entries(j[kind] || {}))
            for (const [n, b] of Object.entries(byName)) target[`${t}.${n}`] = { type: t, name: n, body: b[0], file: f };
    }
    for (const [n, bs] of Object.entries(j.provider || {})) for (const b of bs) m.providers.push({ name: n, alias: b.alias });
    for (const t of j.terraform || []) m.terraform.push({ body: t, file: f });
}
for (const f of varFiles) {
    const m = modules.get(path.dirname(f));
    if (m && parsed.get(f)) Object.assign(m.tfvars, parsed.get(f));
}

// ------------------------------------------------------------------ expressions

// The interpolations (${...} and %{...}) inside a string, escapes removed.
function interpolations(s) {
    const out = [];
    s = s.replace(/\$\$\{/g, '').replace(/%%\{/g, '');
    for (let i = 0; i < s.length - 1; i++) {
        if ((s[i] === '$' || s[i] === '%') && s[i + 1] === '{') {
            let depth = 0, j = i + 1, q = false;
            for (; j < s.length; j++) {
                const c = s[j];
                if (q) { if (c === '\\') j++; else if (c === '"') q = false; continue; }
                if (c === '"') q = true;
                else if (c === '{') depth++;
                else if (c === '}' && --depth === 0) break;
            }
            out.push(s.slice(i + 2, j));
            i = j;
        }
    }
    return out;
}
// Every string in a parsed value, with the path of keys that led to it.
function* strings(v, keys = []) {
    if (typeof v === 'string') yield [v, keys];
    else if (Array.isArray(v)) for (const x of v) yield* strings(x, keys);
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) yield* strings(x, [...keys, k]);
}
function exprsOf(v) {
    const out = [];
    for (const [s] of strings(v)) out.push(...interpolations(s));
    return out;
}
const NAME = '[A-Za-z_][\\w-]*';
const notAfter = '(?<![\\w.\\-])';

function resolveSource(m, src) {
    if (typeof src !== 'string' || !(src.startsWith('./') || src.startsWith('../'))) return null;
    return path.resolve(m.dir, src);
}

// ------------------------------------------------------------------ standard-files

const LAYOUT = [
    'modules/region', 'modules/database', 'modules/secrets', 'modules/edge',
    'envs/prod/foundation', 'envs/prod/regions', 'envs/prod/edge',
    'envs/staging/foundation', 'envs/staging/regions', 'envs/staging/edge',
];
{
    const missing = LAYOUT.filter((d) => !modules.has(path.join(ROOT, d)));
    const ex = path.join(ROOT, 'examples');
    const hasExample = fs.existsSync(ex) && [...modules.keys()].some((d) => d.startsWith(ex + path.sep));
    if (!hasExample) missing.push('examples/<name>');
    result('standard-files', 'layout', missing.map((d) => `missing module ${d}`));
}
const STANDARD = ['main.tf', 'variables.tf', 'outputs.tf', 'versions.tf'];
for (const m of modules.values()) {
    const missing = STANDARD.filter((f) => !fs.existsSync(path.join(m.dir, f)));
    result('standard-files', rel(m.dir), missing.map((f) => `missing ${f}`));
}

// ------------------------------------------------------------------ pinned-versions

// A constraint is pinned when it has an upper bound (~>, <, <=) or names one
// exact version.
function pinned(c) {
    if (typeof c !== 'string' || !c.trim()) return false;
    const parts = c.split(',').map((x) => x.trim());
    return parts.some((p) => /^~>/.test(p) || /^<=?/.test(p) || /^=?\s*\d+\.\d+\.\d+$/.test(p));
}
const BUILTIN_PROVIDERS = new Set(['terraform']);
for (const m of modules.values()) {
    const problems = [];
    const vf = path.join(m.dir, 'versions.tf');
    const blocks = m.terraform.filter((t) => t.file === vf).map((t) => t.body);
    if (!fs.existsSync(vf)) problems.push('no versions.tf');
    else if (!parsed.get(vf)) problems.push('versions.tf does not parse');
    else if (blocks.length === 0) problems.push('versions.tf has no terraform block');
    const rv = blocks.map((b) => b.required_version).find((x) => x !== undefined);
    if (blocks.length && !pinned(rv)) problems.push(`required_version ${JSON.stringify(rv ?? null)} is not pinned`);
    const reqs = {};
    for (const b of blocks) for (const rp of b.required_providers || []) Object.assign(reqs, rp);
    for (const [name, spec] of Object.entries(reqs)) {
        if (typeof spec !== 'object' || !spec) { problems.push(`provider ${name}: use { source, version }`); continue; }
        if (!spec.source) problems.push(`provider ${name} has no source`);
        if (!pinned(spec.version)) problems.push(`provider ${name} version ${JSON.stringify(spec.version ?? null)} is not pinned`);
    }
    const used = new Set();
    for (const r of [...Object.values(m.resources), ...Object.values(m.data), ...Object.values(m.ephemeral)])
        used.add(r.type.split('_')[0]);
    for (const p of m.providers) used.add(p.name);
    for (const p of used) if (!BUILTIN_PROVIDERS.has(p) && !reqs[p]) problems.push(`provider ${p} is used but not in required_providers`);
    result('pinned-versions', rel(m.dir), problems);
}

// ------------------------------------------------------------------ variables

for (const m of modules.values()) {
    const problems = [];
    let validated = 0;
    for (const [n, { body }] of Object.entries(m.variables)) {
        if (body.type === undefined) problems.push(`variable ${n} has no type`);
        if (typeof body.description !== 'string' || !body.description.trim()) problems.push(`variable ${n} has no description`);
        if (body.validation) validated++;
    }
    const reusable = rel(m.dir).split(path.sep)[0] === 'modules';
    if (reusable && Object.keys(m.variables).length && validated === 0) problems.push('no variable has a validation block');
    result('variables', rel(m.dir), problems);
}

// ------------------------------------------------------------------ references

function aliasesOf(m) {
    const set = new Set();
    for (const p of m.providers) if (p.alias) set.add(`${p.name}.${p.alias}`);
    for (const t of m.terraform)
        for (const rp of t.body.required_providers || [])
            for (const [name, spec] of Object.entries(rp))
                for (const a of (spec && spec.configuration_aliases) || []) {
                    const s = String(a).replace(/^\$\{|\}$/g, '');
                    set.add(s.includes('.') ? s : `${name}.${s}`);
                }
    return set;
}
for (const m of modules.values()) {
    if (!m.parsedOk) { result('references', rel(m.dir), ['not checked: a file does not parse']); continue; }
    const problems = new Set();
    const declared = {
        var: new Set(Object.keys(m.variables)),
        local: new Set(Object.keys(m.locals)),
        module: new Set(Object.keys(m.modules)),
    };
    const aliases = aliasesOf(m);
    for (const f of m.files) {
        const j = parsed.get(f);
        for (const e of exprsOf(j)) {
            for (const [, kind, name] of e.matchAll(new RegExp(`${notAfter}(var|local)\\.(${NAME})`, 'g')))
                if (!declared[kind].has(name)) problems.add(`${kind}.${name} is not declared`);
            for (const [, name, attr] of e.matchAll(new RegExp(`${notAfter}module\\.(${NAME})(?:\\[[^\\]]*\\])?(?:\\.(${NAME}))?`, 'g'))) {
                if (!declared.module.has(name)) { problems.add(`module.${name} is not declared`); continue; }
                const childDir = resolveSource(m, m.modules[name].body.source);
                const child = childDir && modules.get(childDir);
                if (attr && child && child.parsedOk && !(attr in child.outputs))
                    problems.add(`module.${name}.${attr}: ${rel(childDir)} has no output "${attr}"`);
            }
            for (const [, kind, t, n] of e.matchAll(new RegExp(`${notAfter}(data|ephemeral)\\.(${NAME})\\.(${NAME})`, 'g')))
                if (!m[kind][`${t}.${n}`]) problems.add(`${kind}.${t}.${n} is not declared`);
            for (const [, t, n] of e.matchAll(new RegExp(`${notAfter}((?:aws|tls|random|null|local|time|cloudinit)_[a-z0-9_]+)\\.(${NAME})`, 'g')))
                if (!m.resources[`${t}.${n}`]) problems.add(`resource ${t}.${n} is not declared`);
        }
        // provider = aws.alias in resources, data sources, ephemeral resources
        for (const kind of ['resource', 'data', 'ephemeral'])
            for (const byName of Object.values(j[kind] || {}))
                for (const [n, bs] of Object.entries(byName)) {
                    const p = bs[0].provider;
                    if (typeof p !== 'string') continue;
                    const a = p.replace(/^\$\{|\}$/g, '');
                    if (a.includes('.') && !aliases.has(a)) problems.add(`${n}: provider ${a} is not configured here`);
                }
        // values of module providers = { ... } maps
        for (const { body } of Object.values(j.module || {}).map((b) => ({ body: b[0] })))
            for (const v of Object.values(body.providers || {})) {
                const a = String(v).replace(/^\$\{|\}$/g, '');
                if (a.includes('.') && !aliases.has(a)) problems.add(`provider ${a} passed to a module is not configured here`);
            }
    }
    result('references', rel(m.dir), [...problems]);
}

// ------------------------------------------------------------------ module-args

const META_ARGS = new Set(['source', 'version', 'providers', 'count', 'for_each', 'depends_on']);
for (const m of modules.values()) {
    for (const [name, { body }] of Object.entries(m.modules)) {
        const problems = [];
        const childDir = resolveSource(m, body.source);
        const child = childDir && modules.get(childDir);
        if (!childDir) { result('module-args', `${rel(m.dir)} module.${name}`, [`source ${JSON.stringify(body.source)} is not a local path`]); continue; }
        if (!child) { result('module-args', `${rel(m.dir)} module.${name}`, [`source ${body.source} has no .tf files`]); continue; }
        const args = Object.keys(body).filter((k) => !META_ARGS.has(k));
        for (const a of args) if (!(a in child.variables)) problems.push(`unknown argument "${a}" (not a variable of ${rel(childDir)})`);
        for (const [v, { body: vb }] of Object.entries(child.variables))
            if (!('default' in vb) && !(v in body)) problems.push(`required argument "${v}" is not set`);
        const childAliases = [...aliasesOf(child)].filter((a) => !child.providers.some((p) => `${p.name}.${p.alias}` === a));
        const passed = Object.keys(body.providers || {});
        for (const k of passed) if (k.includes('.') && !childAliases.includes(k)) problems.push(`providers: ${k} is not a configuration_alias of ${rel(childDir)}`);
        for (const a of childAliases) if (!passed.includes(a)) problems.push(`providers: ${a} (configuration_alias of ${rel(childDir)}) is not passed`);
        result('module-args', `${rel(m.dir)} module.${name}`, problems);
    }
}

// ------------------------------------------------------------------ template-vars

// Splits the argument list of the call starting at s[open] === '('.
function callArgs(s, open) {
    const args = [];
    let depth = 0, q = false, start = open + 1;
    for (let i = open; i < s.length; i++) {
        const c = s[i];
        if (q) { if (c === '\\') i++; else if (c === '"') q = false; continue; }
        if (c === '"') q = true;
        else if ('([{'.includes(c)) depth++;
        else if (')]}'.includes(c)) {
            if (--depth === 0) { args.push(s.slice(start, i)); return args; }
        } else if (c === ',' && depth === 1) { args.push(s.slice(start, i)); start = i + 1; }
    }
    return args;
}
// Top-level keys of an HCL object constructor "{ a = x, b = y }" (or a
// local holding one).
function objectKeys(m, expr) {
    expr = expr.trim();
    const lm = expr.match(new RegExp(`^local\\.(${NAME})$`));
    if (lm && m.locals[lm[1]] && typeof m.locals[lm[1]] === 'object') return Object.keys(m.locals[lm[1]]);
    if (!expr.startsWith('{')) return null;
    const keys = [];
    let depth = 0, q = false, atKey = true;
    for (let i = 0; i < expr.length; i++) {
        const c = expr[i];
        if (q) { if (c === '\\') i++; else if (c === '"') q = false; continue; }
        if (c === '"') { q = true; continue; }
        if ('([{'.includes(c)) { depth++; if (depth === 1) atKey = true; continue; }
        if (')]}'.includes(c)) { depth--; continue; }
        if (depth === 1 && (c === ',' || c === '\n')) { atKey = true; continue; }
        if (depth === 1 && atKey && /[A-Za-z_]/.test(c)) {
            const k = expr.slice(i).match(new RegExp(`^(${NAME})\\s*[=:]`));
            if (k) { keys.push(k[1]); i += k[1].length - 1; }
            atKey = false;
        }
    }
    return keys;
}
const TEMPLATE_KEYWORDS = new Set(['if', 'else', 'endif', 'for', 'in', 'endfor', 'true', 'false', 'null']);
function templateNames(text) {
    const names = new Set();
    for (const body of interpolations(text)) {
        const b = body.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/^~|~$/g, '');
        const bound = new Set();
        const f = b.match(new RegExp(`^\\s*for\\s+(${NAME})(?:\\s*,\\s*(${NAME}))?\\s+in\\s`));
        if (f) { bound.add(f[1]); if (f[2]) bound.add(f[2]); }
        for (const mm of b.matchAll(new RegExp(`${notAfter}(${NAME})(\\s*\\()?`, 'g'))) {
            const [, n, call] = mm;
            if (call || TEMPLATE_KEYWORDS.has(n) || bound.has(n) || /^\d/.test(n)) continue;
            names.add(n);
        }
        for (const n of bound) names.delete(n);
    }
    // names bound by %{ for x in ... } are in scope in the loop body
    for (const mm of text.matchAll(new RegExp(`%\\{~?\\s*for\\s+(${NAME})(?:\\s*,\\s*(${NAME}))?\\s+in`, 'g'))) {
        names.delete(mm[1]);
        if (mm[2]) names.delete(mm[2]);
    }
    return names;
}
for (const m of modules.values()) {
    for (const f of m.files) {
        const j = parsed.get(f);
        if (!j) continue;
        for (const e of exprsOf(j)) {
            for (const mm of e.matchAll(/(?<![\w.])templatefile\s*\(/g)) {
                const args = callArgs(e, mm.index + mm[0].length - 1);
                const pathExpr = (args[0] || '').trim().replace(/^"|"$/g, '').replace(/\$\{path\.module\}/g, m.dir);
                const subject = `${rel(f)} ${path.relative(m.dir, pathExpr) || pathExpr}`;
                const problems = [];
                if (!path.isAbsolute(pathExpr) || !fs.existsSync(pathExpr)) {
                    result('template-vars', subject, [`template ${pathExpr} not found`]);
                    continue;
                }
                const keys = objectKeys(m, args[1] || '{}');
                if (keys === null) { result('template-vars', subject, ['variables are not an object literal; cannot check']); continue; }
                for (const n of templateNames(fs.readFileSync(pathExpr, 'utf8')))
                    if (!keys.includes(n)) problems.push(`template uses "${n}", which is not passed`);
                result('template-vars', subject, problems);
            }
        }
    }
}

// ------------------------------------------------------------------ health-check

const READYZ = '/readyz';
for (const m of modules.values()) {
    for (const r of Object.values(m.resources)) {
        const id = `${rel(m.dir)} ${r.type}.${r.name}`;
        if (r.type === 'aws_lb_target_group' || r.type === 'aws_alb_target_group') {
            const hc = (r.body.health_check || [])[0];
            if (r.body.protocol === 'TCP' || r.body.protocol === 'UDP') continue;
            if (!hc) result('health-check', id, [`no health_check block (must probe ${READYZ})`]);
            else result('health-check', id, hc.path === READYZ ? [] : [`health_check path is ${JSON.stringify(hc.path ?? null)}, must be "${READYZ}"`]);
        } else if (r.type === 'aws_route53_health_check' && /^HTTP/.test(String(r.body.type))) {
            result('health-check', id, r.body.resource_path === READYZ ? [] : [`resource_path is ${JSON.stringify(r.body.resource_path ?? null)}, must be "${READYZ}"`]);
        } else if (r.type === 'aws_globalaccelerator_endpoint_group') {
            result('health-check', id, r.body.health_check_path === READYZ ? [] : [`health_check_path is ${JSON.stringify(r.body.health_check_path ?? null)}, must be "${READYZ}"`]);
        }
    }
    // anything else named like a health check path (module arguments, locals)
    for (const f of m.files) {
        for (const [s, keys] of strings(parsed.get(f) || {})) {
            const k = keys[keys.length - 1] || '';
            if (/health_check_path$|^health_check_path/.test(k) && s !== READYZ)
                result('health-check', `${rel(f)} ${k}`, [`${k} is ${JSON.stringify(s)}, must be "${READYZ}"`]);
        }
    }
}

// ------------------------------------------------------------------ drain-timeout

class Unresolved extends Error {}
function tokenize(s) {
    const toks = [];
    const re = /\s*(?:(\d+(?:\.\d+)?)|("(?:[^"\\]|\\.)*")|([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*|\["[^"]*"\])*)|(==|!=|>=|<=|&&|\|\||[-+*/(),?:<>!]))/y;
    let i = 0;
    s = s.trim();
    while (i < s.length) {
        re.lastIndex = i;
        const m = re.exec(s);
        if (!m || m[0] === '') throw new Unresolved(`cannot evaluate "${s}"`);
        i = re.lastIndex;
        if (m[1]) toks.push({ t: 'num', v: Number(m[1]) });
        else if (m[2]) toks.push({ t: 'str', v: JSON.parse(m[2]) });
        else if (m[3]) toks.push({ t: 'id', v: m[3] });
        else toks.push({ t: 'op', v: m[4] });
        while (i < s.length && /\s/.test(s[i])) i++;
    }
    return toks;
}
// ctx: { m, vars: name -> () => value }
function evaluate(v, ctx, depth = 0) {
    if (depth > 40) throw new Unresolved('reference loop');
    if (typeof v === 'number' || typeof v === 'boolean' || v === null) return v;
    if (typeof v === 'string') {
        const ints = interpolations(v);
        if (ints.length === 0) return /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;
        if (ints.length === 1 && v.startsWith('${') && v.endsWith('}') && ints[0].length === v.length - 3)
            return evalExpr(ints[0], ctx, depth + 1);
        throw new Unresolved(`cannot evaluate template "${v}"`);
    }
    if (typeof v === 'object') return v;
    throw new Unresolved(`cannot evaluate ${JSON.stringify(v)}`);
}
function lookup(id, ctx, depth) {
    const parts = id.split('.');
    let val;
    if (parts[0] === 'var') {
        const get = ctx.vars[parts[1]];
        if (!get) throw new Unresolved(`var.${parts[1]} has no value`);
        val = get(depth);
    } else if (parts[0] === 'local') {
        if (!(parts[1] in ctx.m.locals)) throw new Unresolved(`local.${parts[1]} is not declared`);
        val = evaluate(ctx.m.locals[parts[1]], ctx, depth + 1);
    } else throw new Unresolved(`cannot evaluate ${id}`);
    for (const p of parts.slice(2)) {
        if (!val || typeof val !== 'object' || !(p in val)) throw new Unresolved(`cannot evaluate ${id}`);
        val = evaluate(val[p], ctx, depth + 1);
    }
    return val;
}
function evalExpr(src, ctx, depth) {
    const toks = tokenize(src);
    let i = 0;
    const peek = () => toks[i];
    const eat = (v) => { if (!toks[i] || toks[i].v !== v) throw new Unresolved(`cannot evaluate "${src}"`); i++; };
    const FUNCS = { max: Math.max, min: Math.min, floor: Math.floor, ceil: Math.ceil, tonumber: Number };
    function primary() {
        const t = toks[i++];
        if (!t) throw new Unresolved(`cannot evaluate "${src}"`);
        if (t.t === 'num' || t.t === 'str') return t.v;
        if (t.t === 'op' && t.v === '(') { const v = ternary(); eat(')'); return v; }
        if (t.t === 'op' && t.v === '-') return -primary();
        if (t.t === 'op' && t.v === '!') return !primary();
        if (t.t === 'id') {
            if (t.v === 'true' || t.v === 'false') return t.v === 'true';
            if (t.v === 'null') return null;
            if (peek() && peek().v === '(') {
                if (!FUNCS[t.v]) throw new Unresolved(`cannot evaluate function ${t.v}()`);
                eat('(');
                const args = [];
                while (peek() && peek().v !== ')') { args.push(ternary()); if (peek() && peek().v === ',') eat(','); }
                eat(')');
                return FUNCS[t.v](...args);
            }
            return lookup(t.v, ctx, depth);
        }
        throw new Unresolved(`cannot evaluate "${src}"`);
    }
    function binary(next, ops, fn) {
        return () => {
            let a = next();
            while (peek() && peek().t === 'op' && ops.includes(peek().v)) { const op = toks[i++].v; a = fn(op, a, next()); }
            return a;
        };
    }
    const mul = binary(primary, ['*', '/'], (op, a, b) => (op === '*' ? a * b : a / b));
    const add = binary(mul, ['+', '-'], (op, a, b) => (op === '+' ? a + b : a - b));
    const cmp = binary(add, ['<', '>', '<=', '>=', '==', '!='], (op, a, b) =>
        ({ '<': a < b, '>': a > b, '<=': a <= b, '>=': a >= b, '==': a === b, '!=': a !== b })[op]);
    const and = binary(cmp, ['&&'], (op, a, b) => a && b);
    const or = binary(and, ['||'], (op, a, b) => a || b);
    function ternary() {
        const c = or();
        if (peek() && peek().v === '?') { eat('?'); const a = ternary(); eat(':'); const b = ternary(); return c ? a : b; }
        return c;
    }
    const v = ternary();
    if (i !== toks.length) throw new Unresolved(`cannot evaluate "${src}"`);
    return v;
}

// Module instances: every module no other module calls is a root (values
// from its *.tfvars, else defaults); each call makes a child instance whose
// variables are the call's arguments evaluated in the caller's context.
const called = new Set();
for (const m of modules.values())
    for (const { body } of Object.values(m.modules)) {
        const d = resolveSource(m, body.source);
        if (d) called.add(d);
    }
function rootCtx(m) {
    const vars = {};
    for (const [n, { body }] of Object.entries(m.variables)) {
        if (n in m.tfvars) vars[n] = (d) => evaluate(m.tfvars[n], { m, vars: {} }, d);
        else if ('default' in body) vars[n] = (d) => evaluate(body.default, { m, vars: {} }, d);
    }
    return { m, vars };
}
function childCtx(parent, child, callBody) {
    const vars = {};
    for (const [n, { body }] of Object.entries(child.variables)) {
        if (n in callBody) vars[n] = (d) => evaluate(callBody[n], parent, d + 1);
        else if ('default' in body) vars[n] = (d) => evaluate(body.default, { m: child, vars: {} }, d);
    }
    return { m: child, vars };
}
function instances(ctx, label, out, seen = new Set()) {
    out.push({ ctx, label });
    if (seen.has(ctx.m.dir)) return out;
    for (const [name, { body }] of Object.entries(ctx.m.modules)) {
        const d = resolveSource(ctx.m, body.source);
        const child = d && modules.get(d);
        if (child && child.parsedOk) instances(childCtx(ctx, child, body), `${label} > module.${name}`, out, new Set([...seen, ctx.m.dir]));
    }
    return out;
}
const TERMINATING = 'autoscaling:EC2_INSTANCE_TERMINATING';
for (const m of modules.values()) {
    if (called.has(m.dir) || !m.parsedOk) continue;
    for (const { ctx, label } of instances(rootCtx(m), rel(m.dir), [])) {
        const hooks = [];
        for (const r of Object.values(ctx.m.resources)) {
            if (r.type === 'aws_autoscaling_lifecycle_hook') hooks.push({ id: `${r.type}.${r.name}`, body: r.body });
            if (r.type === 'aws_autoscaling_group')
                for (const h of r.body.initial_lifecycle_hook || []) hooks.push({ id: `${r.type}.${r.name} initial_lifecycle_hook`, body: h });
        }
        const tgs = Object.values(ctx.m.resources).filter((r) => r.type === 'aws_lb_target_group' || r.type === 'aws_alb_target_group');
        for (const h of hooks) {
            const subject = `${label} ${h.id}`;
            try {
                if (evaluate(h.body.lifecycle_transition, ctx) !== TERMINATING) continue;
                if (tgs.length === 0) { result('drain-timeout', subject, ['terminating hook but no target group in the same module to compare with']); continue; }
                const timeout = h.body.heartbeat_timeout === undefined ? 3600 : Number(evaluate(h.body.heartbeat_timeout, ctx));
                const problems = [];
                for (const tg of tgs) {
                    const delay = tg.body.deregistration_delay === undefined ? 300 : Number(evaluate(tg.body.deregistration_delay, ctx));
                    if (!(timeout >= delay))
                        problems.push(`heartbeat_timeout ${timeout}s < ${tg.type}.${tg.name} deregistration_delay ${delay}s`);
                }
                result('drain-timeout', `${subject} (${timeout}s)`, problems);
            } catch (e) {
                if (!(e instanceof Unresolved)) throw e;
                result('drain-timeout', subject, [`cannot resolve statically: ${e.message}`]);
            }
        }
    }
}

// ------------------------------------------------------------------ no-secrets

const SECRET_PATTERNS = [
    [/-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----/, 'a PEM private key'],
    [/(?<![A-Z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Z0-9])/, 'an AWS access key id'],
    [/eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,}/, 'a JSON Web Token'],
    [/(?:postgres(?:ql)?|mysql|redis|amqp|mongodb):\/\/[^\s:/@"'$]+:[^\s@"'$]+@/i, 'a URL with an embedded password'],
    [/\bghp_[A-Za-z0-9]{30,}|\bxox[abp]-[A-Za-z0-9-]{10,}/, 'an API token'],
];
const SENSITIVE_KEY = /(?:^|_)(?:password|passwd|passphrase|secret|secret_key|secret_string|private_key|api_key|access_key|token|auth_token|client_secret)(?:_wo)?$/i;
const LITERAL_OK = (s) => s === '' || interpolations(s).length > 0;
const secretProblems = new Map();
const addSecret = (f, why) => {
    if (!secretProblems.has(f)) secretProblems.set(f, new Set());
    secretProblems.get(f).add(why);
};
for (const f of allFiles) {
    const buf = fs.readFileSync(f);
    if (buf.includes(0)) continue; // binary
    const text = buf.toString('utf8');
    for (const [re, what] of SECRET_PATTERNS) if (re.test(text)) addSecret(f, `contains ${what}`);
}
for (const [f, j] of parsed) {
    if (!j) continue;
    for (const [s, keys] of strings(j)) {
        const k = keys[keys.length - 1] || '';
        if (SENSITIVE_KEY.test(k) && !LITERAL_OK(s)) addSecret(f, `${k} is set to a literal string`);
        // a sensitive variable's default
        if (keys[0] === 'variable' && SENSITIVE_KEY.test(keys[1] || '') && k === 'default' && !LITERAL_OK(s))
            addSecret(f, `variable ${keys[1]} has a literal default`);
    }
}
for (const f of allFiles) {
    const why = secretProblems.get(f);
    if (why) result('no-secrets', rel(f), [...why]);
}
result('no-secrets', `${allFiles.length} files`, secretProblems.size ? [`${secretProblems.size} file(s) with secrets (above)`] : []);

// ------------------------------------------------------------------ summary

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
