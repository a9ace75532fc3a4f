// pgJDBC through pgshard over two shards. JDBC sends everything over the extended protocol,
// BEGIN included (with autocommit off it is pipelined with the first statement), and uses
// server-side prepared statements after a few executions.
//
// Usage: java -cp postgresql.jar JdbcRouting.java URL FIRST_ID_ON_S0 FIRST_ID_ON_S1 COUNTRY
// Inserts users FIRST_ID.. (20 per shard) in transactions, one shard per transaction, then checks
// them with reads by key and a cross-shard count (the first statement of its transaction), and
// inserts COUNTRY into the reference table countries. Exits non-zero on any error or wrong result.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;

public class JdbcRouting {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        long[] firsts = {Long.parseLong(args[1]), Long.parseLong(args[2])};
        try (Connection conn = DriverManager.getConnection(url, "app", "app")) {
            conn.setAutoCommit(false);
            PreparedStatement insert =
                    conn.prepareStatement("INSERT INTO users (user_id, name) VALUES (?, ?)");
            PreparedStatement read =
                    conn.prepareStatement("SELECT name, inet_server_port() FROM users WHERE user_id = ?");
            for (int shard = 0; shard < 2; shard++) {
                // A transaction of several statements, all on one shard, committed.
                for (int i = 0; i < 20; i++) {
                    insert.setLong(1, firsts[shard] + i * 1000L);
                    insert.setString(2, "jdbc-" + shard);
                    check(insert.executeUpdate() == 1, "insert count");
                }
                read.setLong(1, firsts[shard]);
                try (ResultSet rs = read.executeQuery()) {
                    check(rs.next() && rs.getString(1).equals("jdbc-" + shard), "read in transaction");
                }
                conn.commit();
                // A transaction rolled back leaves nothing.
                insert.setLong(1, firsts[shard] + 999L);
                insert.setString(2, "rolled-back");
                insert.executeUpdate();
                conn.rollback();
            }
            // Reads in transactions go to the primaries, so they see the commits at once (plain
            // reads would go to replicas, which may lag); each transaction reads one shard.
            for (int shard = 0; shard < 2; shard++) {
                for (int i = 0; i < 20; i++) {
                    read.setLong(1, firsts[shard] + i * 1000L);
                    try (ResultSet rs = read.executeQuery()) {
                        check(rs.next() && rs.getString(1).equals("jdbc-" + shard), "read after commit");
                    }
                }
                read.setLong(1, firsts[shard] + 999L);
                try (ResultSet rs = read.executeQuery()) {
                    check(!rs.next(), "rolled-back row is absent");
                }
                conn.commit();
            }
            // A cross-shard read over the extended protocol.
            try (PreparedStatement count =
                    conn.prepareStatement("SELECT count(*) FROM users WHERE name LIKE ?")) {
                count.setString(1, "jdbc-%");
                try (ResultSet rs = count.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == 40, "cross-shard count");
                }
            }
            conn.commit();
            // A write to a reference table, with parameters, outside a transaction: every shard.
            conn.setAutoCommit(true);
            try (PreparedStatement ref =
                    conn.prepareStatement("INSERT INTO countries (code, name) VALUES (?, ?)")) {
                ref.setString(1, args[3]);
                ref.setString(2, "JDBC");
                check(ref.executeUpdate() == 1, "reference insert count");
            }
        } catch (SQLException e) {
            System.err.println("SQL error " + e.getSQLState() + ": " + e.getMessage());
            System.exit(1);
        }
        System.out.println("jdbc: 40 rows in 4 transactions on their shards, reads and count agree");
    }
}
